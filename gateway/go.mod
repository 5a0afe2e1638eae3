module github.com/calmline/calmline/gateway

go 1.26.0
