module observer.test/goservers

go 1.19
