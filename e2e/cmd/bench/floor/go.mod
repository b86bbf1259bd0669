module github.com/edgecanary/benchfloor

go 1.21
