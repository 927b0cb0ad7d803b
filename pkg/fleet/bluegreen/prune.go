package bluegreen

import (
	"context"
	"errors"
	"fmt"
)

// prunedSecrets start the names of the secrets releases make from the operator's files:
// a new file is a new secret, and the one it replaces stays until pruned.
var prunedSecrets = []string{jwtSecretPrefix, grafanaSecretPrefix, tlsCertSecretPrefix, tlsKeySecretPrefix, alertmanagerSecretPrefix}

// prunedConfigs start the names of the edge stack's versioned configs (stack/edge.yml,
// stack/nats-cluster.yml): a changed file deploys as a new config, and the one it
// replaces stays until pruned.
var prunedConfigs = []string{
	"edge_prometheus_yml-", "edge_prometheus_rules-", "edge_grafana_datasources-",
	"edge_grafana_dashboard_provider-", "edge_grafana_dashboard_roomcast-", "edge_nats_cluster_conf-",
}

// Prune removes the Swarm secrets and configs that releases made and no service mounts
// any more: JWT keys, passwords, certificates and Alertmanager configurations that newer
// files replaced, and the edge stack's configs of earlier versions of monitoring/ and
// the NATS cluster's configuration. It holds the release lock meanwhile, so that no
// deploy is between making a secret and mounting it (without an edge stack there is no
// lock and nothing to race with). With dryRun it only says what it would remove. A
// deploy makes what it needs again from the files.
func (r *Release) Prune(ctx context.Context, dryRun bool) error {
	switch _, err := r.Docker.Service(ctx, EdgeService); {
	case errors.Is(err, ErrNotFound):
		r.logf("no edge stack: pruning without the release lock")
	case err != nil:
		return err
	default:
		mine, _, err := r.lock(ctx, "prune", nil)
		if err != nil {
			return err
		}
		defer r.unlockEdge(ctx, mine)
	}
	svcs, err := r.Docker.Services(ctx)
	if err != nil {
		return err
	}
	secretsInUse, configsInUse := map[string]bool{}, map[string]bool{}
	for _, s := range svcs {
		for _, n := range s.Secrets {
			secretsInUse[n] = true
		}
		for _, n := range s.Configs {
			configsInUse[n] = true
		}
	}
	var errs []error
	removed := 0
	for _, kind := range []struct {
		what     string
		prefixes []string
		inUse    map[string]bool
		list     func(context.Context, string) ([]SwarmObject, error)
		remove   func(context.Context, string) error
	}{
		{"secret", prunedSecrets, secretsInUse, r.Docker.Secrets, r.Docker.RemoveSecret},
		{"config", prunedConfigs, configsInUse, r.Docker.Configs, r.Docker.RemoveConfig},
	} {
		for _, prefix := range kind.prefixes {
			objs, err := kind.list(ctx, prefix)
			if err != nil {
				return err
			}
			for _, o := range objs {
				if kind.inUse[o.Name] {
					continue
				}
				if dryRun {
					r.logf("would remove %s %s: no service mounts it", kind.what, o.Name)
					continue
				}
				r.logf("removing %s %s: no service mounts it", kind.what, o.Name)
				// One a deploy mounted since the listing is refused: kept, and said so.
				if err := kind.remove(ctx, o.ID); err != nil {
					errs = append(errs, err)
					continue
				}
				removed++
			}
		}
	}
	if !dryRun {
		r.logf("pruned %d secrets and configs", removed)
	}
	if len(errs) > 0 {
		return fmt.Errorf("pruning: %w", errors.Join(errs...))
	}
	return nil
}
