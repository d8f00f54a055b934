// An HTTPS client on Go's net/http, for observer's Go TLS tests: it waits for a line on
// stdin (so that the observer can hook it first), then GETs each URL in turn over one
// keep-alive connection, certificate unchecked, and prints "STATUS LOCALPORT PROTO" per
// request. With CLIENT_HTTP2 set it offers HTTP/2.
//
// Usage: client URL...
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
)

func main() {
	bufio.NewReader(os.Stdin).ReadString('\n')
	var local string
	dialer := &net.Dialer{}
	transport := &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err == nil {
				local = c.LocalAddr().String()
			}
			return c, err
		},
		ForceAttemptHTTP2: os.Getenv("CLIENT_HTTP2") != "",
	}
	client := &http.Client{Transport: transport}
	for _, url := range os.Args[1:] {
		resp, err := client.Get(url)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		port := local[strings.LastIndex(local, ":")+1:]
		fmt.Printf("%d %s %s\n", resp.StatusCode, port, resp.Proto)
	}
}
