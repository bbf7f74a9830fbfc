module github.com/d-engine/d-engine/examples/go

go 1.26.0

require github.com/d-engine/d-engine/clients/go v0.0.0

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261104224025-d1e00e9f33ab // indirect
	google.golang.org/grpc v1.85.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

// Build against the client in this repository; an application outside the
// repository just runs `go get github.com/d-engine/d-engine/clients/go`.
replace github.com/d-engine/d-engine/clients/go => ../../clients/go
