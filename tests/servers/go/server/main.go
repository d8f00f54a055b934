// A small JSON API on Go's net/http, for observer's Go TLS tests.
//
// Usage: server PORT [CERT KEY]   (with CERT and KEY, HTTPS; HTTP/2 unless
// GODEBUG=http2server=0)
//
//	GET  /health     200
//	GET  /api/items  200 with Basic auth alice:wonderland or Bearer demo-token, else 401
//	POST /login      200 for {"user":"alice","password":"wonderland"}, else 401
//	GET  /admin      403
//	GET  /json       200, a small JSON object
//	anything else    a file of the directory $WWW when set, else 404
package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strconv"
)

func reply(w http.ResponseWriter, code int, v interface{}) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	w.Write(body)
}

func authorized(r *http.Request) bool {
	if user, pass, ok := r.BasicAuth(); ok {
		return user == "alice" && pass == "wonderland"
	}
	return r.Header.Get("Authorization") == "Bearer demo-token"
}

// Serves $WWW's files, for the benchmark.
var www http.Handler

func handle(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/health":
		reply(w, 200, map[string]string{"status": "ok"})
	case r.URL.Path == "/api/items":
		if !authorized(r) {
			reply(w, 401, map[string]string{"error": "unauthorized"})
			return
		}
		reply(w, 200, []string{"a", "b"})
	case r.URL.Path == "/login" && r.Method == "POST":
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		var login struct {
			User     string `json:"user"`
			Password string `json:"password"`
		}
		if json.Unmarshal(body, &login) == nil && login.User == "alice" && login.Password == "wonderland" {
			reply(w, 200, map[string]string{"status": "welcome"})
			return
		}
		reply(w, 401, map[string]string{"error": "bad credentials"})
	case r.URL.Path == "/admin":
		reply(w, 403, map[string]string{"error": "forbidden"})
	case r.URL.Path == "/json":
		reply(w, 200, map[string]interface{}{"id": 1, "name": "widget", "tags": []string{"a", "b"}})
	case www != nil:
		www.ServeHTTP(w, r)
	default:
		reply(w, 404, map[string]string{"error": "not found"})
	}
}

func main() {
	if dir := os.Getenv("WWW"); dir != "" {
		www = http.FileServer(http.Dir(dir))
	}
	addr := "127.0.0.1:" + os.Args[1]
	srv := &http.Server{Addr: addr, Handler: http.HandlerFunc(handle)}
	var err error
	if len(os.Args) > 3 {
		err = srv.ListenAndServeTLS(os.Args[2], os.Args[3])
	} else {
		err = srv.ListenAndServe()
	}
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
}
