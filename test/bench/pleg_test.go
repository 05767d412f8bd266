package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCRIRequests(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`# HELP berth_cri_requests_total CRI requests served, by method and gRPC status code.
# TYPE berth_cri_requests_total counter
berth_cri_requests_total{code="OK",method="ListContainers"} 120
berth_cri_requests_total{code="NotFound",method="ContainerStatus"} 2
berth_cri_requests_total{code="OK",method="ContainerStatus"} 40
berth_cri_request_duration_seconds_count{code="OK",method="ListContainers"} 120
go_goroutines 12
`))
	}))
	defer srv.Close()
	got, err := criRequests(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"ListContainers": 120, "ContainerStatus": 42}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	if _, err := criRequests("127.0.0.1:1"); err == nil {
		t.Error("no error from an address nothing listens on")
	}
}

func TestWriteStaticPod(t *testing.T) {
	dir := t.TempDir()
	if err := writeStaticPod(dir, 3, 3, "127.0.0.1:5000/busybox:1"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "pleg-3.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pod struct {
		Metadata struct{ Name, Namespace string }
		Spec     struct {
			Containers []struct {
				Name, Image string
				Command     []string
			}
		}
	}
	if err := json.Unmarshal(data, &pod); err != nil {
		t.Fatal(err)
	}
	if pod.Metadata.Name != "pleg-3" || pod.Metadata.Namespace != plegNamespace {
		t.Errorf("metadata %+v", pod.Metadata)
	}
	if len(pod.Spec.Containers) != 3 || pod.Spec.Containers[2].Name != "sidecar-b" ||
		pod.Spec.Containers[0].Image != "127.0.0.1:5000/busybox:1" || len(pod.Spec.Containers[0].Command) != len(workload) {
		t.Errorf("containers %+v", pod.Spec.Containers)
	}
}
