module github.com/edgecanary/edgecanary

go 1.26.0

require (
	github.com/sony/gobreaker v1.0.0
	golang.org/x/time v0.16.0
)
