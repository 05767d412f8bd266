package nri

import (
	"context"
	"fmt"
	"log/slog"
)

// slogAdapter carries the adaptation's log lines (plugin connections,
// registrations, failures) into berthd's log.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Debugf(ctx context.Context, format string, args ...any) {
	a.l.DebugContext(ctx, fmt.Sprintf(format, args...))
}

func (a slogAdapter) Infof(ctx context.Context, format string, args ...any) {
	a.l.InfoContext(ctx, fmt.Sprintf(format, args...))
}

func (a slogAdapter) Warnf(ctx context.Context, format string, args ...any) {
	a.l.WarnContext(ctx, fmt.Sprintf(format, args...))
}

func (a slogAdapter) Errorf(ctx context.Context, format string, args ...any) {
	a.l.ErrorContext(ctx, fmt.Sprintf(format, args...))
}
