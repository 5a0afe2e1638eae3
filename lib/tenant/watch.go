package tenant

import (
	"context"
	"log/slog"
	"time"
)

// Watch reloads the registry whenever its file changes (checked every
// interval) or a value arrives on reload (main wires SIGHUP to it), until
// ctx ends. Failed reloads are logged and the previous tenants stay in
// force.
func (r *Registry) Watch(ctx context.Context, interval time.Duration, reload <-chan struct{}, log *slog.Logger) {
	if r.path == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
			if err := r.Reload(); err != nil {
				log.Error("reloading tenants failed; keeping the previous ones", "err", err)
			} else {
				log.Info("tenants reloaded", "path", r.path, "tenants", len(r.Tenants()))
			}
		case <-t.C:
			changed, err := r.ReloadIfChanged()
			if err != nil {
				log.Error("reloading tenants failed; keeping the previous ones", "err", err)
			} else if changed {
				log.Info("tenants file changed; reloaded", "path", r.path, "tenants", len(r.Tenants()))
			}
		}
	}
}
