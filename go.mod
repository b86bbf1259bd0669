module github.com/edgecanary/edgecanary

go 1.21
