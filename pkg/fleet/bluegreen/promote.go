package bluegreen

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// smokeBound bounds the smoke job as a whole (its own -timeout is SmokeTimeout).
const smokeBound = 2 * time.Minute

// Promote releases tag to the idle color: deploy it with the active color's replica
// count, wait until every replica runs tag and is healthy, smoke-test it, flip nginx
// by one label update, wait until nginx answers with it, and drain the old color to 0
// replicas (kept for Rollback). Any failure or interrupt before the flip puts the idle
// color back as it was (or removes it) and leaves the labels as they were.
func (r *Release) Promote(ctx context.Context, tag string) error {
	return r.underLock(ctx, "promote "+tag, "run just deploy first", func(mine string, edge Service, active string) error {
		return r.promote(ctx, mine, edge, active, tag)
	})
}

// Rollback promotes the previous color again, at the tag it runs.
func (r *Release) Rollback(ctx context.Context) error {
	return r.underLock(ctx, "rollback", "nothing to roll back", func(mine string, edge Service, active string) error {
		previous := edge.Labels[LabelPrevious]
		if previous == "" || previous == active {
			return errors.New("no previous color recorded: nothing to roll back to")
		}
		prev, err := r.Docker.Service(ctx, appService(previous))
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("the previous color %s no longer exists", previous)
		} else if err != nil {
			return err
		}
		r.logf("rolling back from %s to %s", active, previous)
		return r.promote(ctx, mine, edge, active, tagOf(prev.Image))
	})
}

// underLock checks that the edge stack exists, takes the lock with LabelPromoting set
// (the autoscaler keeps its hands off while a release is under way) and calls fn with
// the lock's value, the nginx service and its active color; the lock is released when
// fn returns. Without an active color it fails, saying noActive.
func (r *Release) underLock(ctx context.Context, op, noActive string, fn func(mine string, edge Service, active string) error) error {
	if _, err := r.Docker.Service(ctx, EdgeService); errors.Is(err, ErrNotFound) {
		return errors.New("no edge stack: run just deploy first")
	} else if err != nil {
		return err
	}
	mine, edge, err := r.lock(ctx, op, map[string]string{LabelPromoting: "true"})
	if err != nil {
		return err
	}
	defer r.unlockEdge(ctx, mine, LabelPromoting)
	active, err := activeColor(edge)
	if err != nil {
		return err
	}
	if active == "" {
		return errors.New("nginx has no roomcast.active label: " + noActive)
	}
	return fn(mine, edge, active)
}

// idleState is the idle color as it was before a release touched it.
type idleState struct {
	color    string
	existed  bool
	image    string
	replicas uint64
}

func (r *Release) promote(ctx context.Context, mine string, edge Service, active, tag string) error {
	idle := Other(active)
	activeSvc, err := r.Docker.Service(ctx, appService(active))
	if err != nil {
		return fmt.Errorf("reading the replicas of %s: %w", appService(active), err)
	}
	// Read under the lock, with the autoscaler paused: it may have just scaled.
	replicas := uint64(1)
	if activeSvc.Replicas != nil && *activeSvc.Replicas > 1 {
		replicas = *activeSvc.Replicas
	}
	image := r.Config.AppImage + ":" + tag
	if err := r.requireImage(ctx, image); err != nil {
		return err
	}
	env, err := r.stackEnv(ctx)
	if err != nil {
		return err
	}
	before := idleState{color: idle}
	if svc, err := r.Docker.Service(ctx, appService(idle)); err == nil {
		before.existed, before.image = true, svc.Image
		if svc.Replicas != nil {
			before.replicas = *svc.Replicas
		}
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	r.logf("promoting %s: %s is active, releasing to %s × %d", image, active, idle, replicas)

	failBeforeFlip := func(step, why string) error {
		if ctx.Err() != nil {
			why = "interrupted before the flip, while " + step
		}
		r.logf("%s; users stay on %s", why, active)
		r.restoreIdle(ctx, env, before)
		return errors.New(why)
	}
	if err := r.deployColor(ctx, env, idle, image, replicas); err != nil {
		return failBeforeFlip("deploying "+idle, fmt.Sprintf("deploying %s failed: %v", idle, err))
	}
	if err := r.waitReplicas(ctx, appService(idle), replicas, image, r.Config.HealthTimeout); err != nil {
		return failBeforeFlip("waiting for "+idle+" to become healthy", fmt.Sprintf("%s replicas did not become healthy within %s: %v", idle, secs(r.Config.HealthTimeout), err))
	}
	if err := r.smoke(ctx, env, idle, image); err != nil {
		return failBeforeFlip("smoke-testing "+idle, fmt.Sprintf("smoke test of %s failed: %v", idle, err))
	}
	if ctx.Err() != nil {
		return failBeforeFlip("about to flip", "")
	}

	r.logf("flipping nginx to %s", idle)
	previous := edge.Labels[LabelPrevious]
	// The flip is one request that an interrupt does not cut short: cancelled in
	// flight, it could be applied without this release knowing.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := r.updateEdge(fctx, mine, map[string]string{LabelActive: idle, LabelPrevious: active}); err != nil {
		return failBeforeFlip("flipping nginx", fmt.Sprintf("updating the nginx labels failed: %v", err))
	}
	if err := r.waitEdgeColor(ctx, idle); err != nil {
		if ctx.Err() != nil {
			return r.interruptedAfterFlip(active, idle, "before nginx was seen to answer with "+idle)
		}
		// Put the labels back as they were, roomcast.previous included.
		restore, remove := map[string]string{LabelActive: active}, []string{}
		if previous == "" {
			remove = append(remove, LabelPrevious)
		} else {
			restore[LabelPrevious] = previous
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if uerr := r.updateEdge(rctx, mine, restore, remove...); uerr != nil {
			r.logf("warning: putting the nginx labels back: %v", uerr)
		}
		return failBeforeFlip("flipping nginx", fmt.Sprintf("nginx did not switch to %s: %v", idle, err))
	}

	r.logf("draining %s (its connections close with 1012 and reconnect to %s)", active, idle)
	if err := r.Docker.Scale(ctx, appService(active), 0); err != nil {
		if ctx.Err() != nil {
			return r.interruptedAfterFlip(active, idle, "before "+active+" was scaled to 0")
		}
		return fmt.Errorf("%s is active, but scaling %s to 0 failed: %w", idle, active, err)
	}
	for i, warn := range []string{"%s is still draining after %s", "warning: %s still has tasks"} {
		err := r.waitReplicas(ctx, appService(active), 0, "", r.Config.DrainTimeout)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return r.interruptedAfterFlip(active, idle, "while "+active+" drains (Swarm finishes the drain)")
		}
		if i == 0 {
			r.logf(warn, active, secs(r.Config.DrainTimeout))
		} else {
			r.logf(warn, active)
		}
	}
	r.logf("promoted: %s is active (%s × %d); %s kept at 0 for rollback", idle, image, replicas, active)
	return nil
}

// interruptedAfterFlip stops without anything destructive and says what is left.
func (r *Release) interruptedAfterFlip(active, idle, when string) error {
	r.logf("interrupted after the flip, %s: nginx follows %s (roomcast.active=%s, roomcast.previous=%s); %s keeps its replicas until scaled to 0 (docker service scale %s=0), or go back with just rollback",
		when, idle, idle, active, active, appService(active))
	return fmt.Errorf("interrupted after the flip: %s is active, %s not drained", idle, active)
}

// restoreIdle puts the idle color back as it was before the release: the same image
// and replica count, or no stack at all. It runs to its end even after an interrupt.
func (r *Release) restoreIdle(ctx context.Context, env map[string]string, before idleState) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.Config.DrainTimeout+time.Minute)
	defer cancel()
	if !before.existed {
		r.logf("removing %s", before.color)
		if err := r.Docker.RemoveStack(ctx, before.color); err != nil {
			r.logf("warning: removing %s: %v", before.color, err)
		}
		return
	}
	r.logf("putting %s back as it was (%s × %d)", before.color, before.image, before.replicas)
	if err := r.deployColor(ctx, env, before.color, before.image, before.replicas); err != nil {
		r.logf("warning: %v", err)
		return
	}
	if err := r.waitReplicas(ctx, appService(before.color), before.replicas, before.image, r.Config.DrainTimeout); err != nil {
		r.logf("warning: %s not back as it was: %v", before.color, err)
	}
}

// deployColor deploys the app stack as color, running image × replicas.
func (r *Release) deployColor(ctx context.Context, env map[string]string, color, image string, replicas uint64) error {
	r.logf("deploying %s: %s × %d", color, image, replicas)
	repo, tag := splitImage(image)
	e := map[string]string{"COLOR": color, "ROOMCAST_IMAGE": repo, "TAG": tag, "REPLICAS": strconv.FormatUint(replicas, 10)}
	for k, v := range env {
		e[k] = v
	}
	return r.Stacks.Deploy(ctx, color, []string{r.Config.AppStack}, e)
}

// smoke runs roomcast-smoke against color from a one-off job on the overlay network.
// The key is the Swarm secret, mounted as a file: never a literal in the job's
// environment, never a bind mount (the engine may be remote).
func (r *Release) smoke(ctx context.Context, env map[string]string, color, image string) error {
	r.logf("smoke test of %s from a one-off job on the %s network", color, r.Config.Network)
	ctx, cancel := context.WithTimeout(ctx, max(smokeBound, r.Config.SmokeTimeout+time.Minute))
	defer cancel()
	res, err := r.Docker.RunJob(ctx, Job{
		Name:  "roomcast_smoke_" + color,
		Image: image,
		Command: []string{"/usr/local/bin/roomcast-smoke", "-target", "tasks." + appService(color) + ":8080",
			"-color", color, "-timeout", r.Config.SmokeTimeout.String(), "-jwt-secret-file", "/run/secrets/roomcast_jwt",
			// The values the stack gave the replicas, or they refuse the job's token.
			"-jwt-audience", env["JWT_AUDIENCE"], "-jwt-issuer", env["JWT_ISSUER"]},
		Network:      r.Config.Network,
		Secret:       jwtSecretPrefix + env["JWT_SECRET_ID"],
		SecretTarget: "roomcast_jwt",
	})
	_, _ = r.Out.Write(res.Output)
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("roomcast-smoke exited with status %d", res.ExitCode)
	}
	return nil
}
