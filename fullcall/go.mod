module github.com/calmline/calmline/fullcall

go 1.26.0
