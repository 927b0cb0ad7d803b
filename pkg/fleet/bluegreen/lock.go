package bluegreen

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Lock is the value of LabelLock: "HOLDER since RFC3339-TIME".
type Lock struct {
	// Holder says who: user@host, process ID and operation.
	Holder string
	Since  time.Time
}

const lockSince = " since "

func (l Lock) String() string { return l.Holder + lockSince + l.Since.UTC().Format(time.RFC3339) }

// ParseLock reads a LabelLock value; false for an empty one. A value it cannot read
// (written by hand) is a lock of unknown age, held since the zero time: old enough
// to be broken.
func ParseLock(v string) (Lock, bool) {
	if v == "" {
		return Lock{}, false
	}
	i := strings.LastIndex(v, lockSince)
	if i < 0 {
		return Lock{Holder: v}, true
	}
	t, err := time.Parse(time.RFC3339, v[i+len(lockSince):])
	if err != nil {
		return Lock{Holder: v}, true
	}
	return Lock{Holder: v[:i], Since: t}, true
}

// LockedError is the refusal of a release while another holds the lock.
type LockedError struct {
	Lock Lock
	Age  time.Duration
	// StaleAfter is the age from which the lock may be broken.
	StaleAfter time.Duration
}

func (e *LockedError) Error() string {
	hint := fmt.Sprintf("it can be broken once older than %s, if its process is gone (just unlock)", e.StaleAfter)
	if e.Age >= e.StaleAfter {
		hint = "it is older than " + e.StaleAfter.String() + ": if its process is gone, break it with just unlock (or -break-stale-lock)"
	}
	return fmt.Sprintf("another release is under way: the release lock is held by %s for %s; %s",
		e.Lock.Holder, e.Age.Round(time.Second), hint)
}

// ErrLockLost means the lock this release held was broken (or the edge stack was
// replaced) while it ran.
var ErrLockLost = errors.New("the release lock was taken from this release")

// lockAttempts bounds how often a take or an update is retried after losing a
// compare-and-set to some other writer of the edge service.
const lockAttempts = 5

// lock takes the release lock for op, setting the labels set in the same update.
// With breakStale, a lock older than StaleAfter is broken (and said so).
func (r *Release) lock(ctx context.Context, op string, set map[string]string) (string, Service, error) {
	mine := Lock{Holder: r.Holder + " (" + op + ")", Since: r.now().UTC().Truncate(time.Second)}.String()
	for range lockAttempts {
		edge, err := r.Docker.Service(ctx, EdgeService)
		if err != nil {
			return "", edge, fmt.Errorf("reading the release lock: %w", err)
		}
		if held, ok := ParseLock(edge.Labels[LabelLock]); ok {
			age := r.now().Sub(held.Since)
			if !r.BreakStaleLock || age < r.Config.LockStaleAfter {
				return "", edge, &LockedError{Lock: held, Age: age, StaleAfter: r.Config.LockStaleAfter}
			}
			r.logf("breaking the release lock of %s, held for %s", held.Holder, age.Round(time.Second))
		}
		labels := map[string]string{LabelLock: mine}
		for k, v := range set {
			labels[k] = v
		}
		err = r.Docker.UpdateLabels(ctx, edge, labels, nil)
		if errors.Is(err, ErrConflict) {
			continue // someone wrote first: look again at who holds it
		}
		if err != nil {
			return "", edge, fmt.Errorf("taking the release lock: %w", err)
		}
		edge, err = r.Docker.Service(ctx, EdgeService)
		return mine, edge, err
	}
	return "", Service{}, fmt.Errorf("taking the release lock: the edge service kept changing (%d attempts)", lockAttempts)
}

// updateEdge changes labels of the edge service while this release holds the lock.
func (r *Release) updateEdge(ctx context.Context, mine string, set map[string]string, remove ...string) error {
	for range lockAttempts {
		edge, err := r.Docker.Service(ctx, EdgeService)
		if err != nil {
			return err
		}
		if got := edge.Labels[LabelLock]; got != mine {
			holder := "no one"
			if l, ok := ParseLock(got); ok {
				holder = l.Holder
			}
			return fmt.Errorf("%w (it is now held by %s)", ErrLockLost, holder)
		}
		err = r.Docker.UpdateLabels(ctx, edge, set, remove)
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("updating the labels of %s: it kept changing (%d attempts)", EdgeService, lockAttempts)
}

// unlockEdge removes this release's lock and the labels remove, on every exit path:
// with a context of its own, since ctx may be the one an interrupt cancelled.
func (r *Release) unlockEdge(ctx context.Context, mine string, remove ...string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := r.updateEdge(ctx, mine, nil, append([]string{LabelLock}, remove...)...); err != nil {
		r.logf("warning: releasing the release lock: %v", err)
	}
}

// Unlock breaks the release lock (and clears LabelPromoting, which a killed release
// leaves behind): only a lock older than StaleAfter, unless force.
func (r *Release) Unlock(ctx context.Context, force bool) error {
	for range lockAttempts {
		edge, err := r.Docker.Service(ctx, EdgeService)
		if err != nil {
			return fmt.Errorf("reading the release lock: %w", err)
		}
		held, ok := ParseLock(edge.Labels[LabelLock])
		if !ok && edge.Labels[LabelPromoting] == "" {
			r.logf("the release lock is free")
			return nil
		}
		age := r.now().Sub(held.Since)
		if ok && !force && age < r.Config.LockStaleAfter {
			return &LockedError{Lock: held, Age: age, StaleAfter: r.Config.LockStaleAfter}
		}
		err = r.Docker.UpdateLabels(ctx, edge, nil, []string{LabelLock, LabelPromoting})
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("breaking the release lock: %w", err)
		}
		if ok {
			r.logf("broke the release lock of %s, held for %s", held.Holder, age.Round(time.Second))
		} else {
			r.logf("cleared %s", LabelPromoting)
		}
		return nil
	}
	return fmt.Errorf("breaking the release lock: the edge service kept changing (%d attempts)", lockAttempts)
}
