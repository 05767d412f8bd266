package server

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// parseBandwidth reads a Kubernetes quantity ("10M", "1Gi", "500k") as bits
// per second, the unit of the kubernetes.io/*-bandwidth annotations. An empty
// value means no limit.
func parseBandwidth(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	suffixes := []struct {
		s string
		m float64
	}{
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"Pi", 1 << 50}, {"Ei", 1 << 60},
		{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18}, {"m", 1e-3},
	}
	num, mult := v, 1.0
	for _, sf := range suffixes {
		if strings.HasSuffix(v, sf.s) {
			num, mult = strings.TrimSuffix(v, sf.s), sf.m
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || f*mult > 1<<62 {
		return 0, fmt.Errorf("bandwidth %q is not a valid quantity: %w", v, errdefs.ErrInvalidArgument)
	}
	return int64(f * mult), nil
}
