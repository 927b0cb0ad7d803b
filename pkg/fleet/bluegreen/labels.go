// Package bluegreen owns roomcast's release vocabulary and protocol on Swarm: the two
// colors, the labels on the nginx (edge) service that say which color is live, which
// one was live before and whether a release is under way, and the steps that change
// them. roomcast-edge and roomcast-autoscaler read the same labels through it.
package bluegreen

import (
	"slices"
	"strings"
)

// The labels of the edge (nginx) service. The edge service is the one place a
// deployment's release state lives: nginx follows LabelActive, the autoscaler pauses
// while LabelPromoting is "true", and rollback returns to LabelPrevious.
const (
	// LabelActive names the color nginx sends traffic to.
	LabelActive = "roomcast.active"
	// LabelPrevious names the color that was active before the last flip.
	LabelPrevious = "roomcast.previous"
	// LabelPromoting is "true" while a release is under way.
	LabelPromoting = "roomcast.promoting"
)

// The two colors.
const (
	Blue  = "blue"
	Green = "green"
)

// Colors are the values LabelActive and LabelPrevious may take.
var Colors = []string{Blue, Green}

// ValidColor reports whether c is one of Colors.
func ValidColor(c string) bool { return slices.Contains(Colors, c) }

// Other is the color that is not c.
func Other(c string) string {
	if c == Blue {
		return Green
	}
	return Blue
}

// ColorPlaceholder stands for the color in service name patterns and queries, such as
// "{color}_app".
const ColorPlaceholder = "{color}"

// ForColor replaces ColorPlaceholder in pattern by color.
func ForColor(pattern, color string) string {
	return strings.ReplaceAll(pattern, ColorPlaceholder, color)
}

// LabelLock holds the release lock: who runs a release and since when (see Lock). A
// release (promote, rollback, deploy, scale) takes it by one update of the edge
// service at the version it read, so two at once cannot both win.
const LabelLock = "roomcast.lock"

// LabelNATSCluster is "true" on the NATS service of the edge stack when it runs as a
// cluster (stack/nats-cluster.yml).
const LabelNATSCluster = "roomcast.nats-cluster"

// The Swarm services of a deployment.
const (
	// EdgeService is the nginx service whose labels hold the release state.
	EdgeService = "edge_nginx"
	// NATSService is the edge stack's NATS.
	NATSService = "edge_nats"
	// AppService is the app service of a color.
	AppService = ColorPlaceholder + "_app"
)
