package bluegreen

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"unicode"
)

// The Swarm secrets of the edge's NATS (stack/nats-auth.conf): the app's password as a
// file for the app, and the variables nats-server reads from an included file, which
// cannot name a file of its own (stack/nats.conf, stack/nats-cluster.conf).
const (
	// natsAppSecretPrefix starts the name of the secret holding the app's NATS password,
	// mounted by the app (ROOMCAST_NATS_PASSWORD_FILE).
	natsAppSecretPrefix = "roomcast_nats_app_"
	// natsUsersSecretPrefix starts the name of the secret holding the same password as
	// ROOMCAST_APP_PASSWORD, mounted by the NATS nodes.
	natsUsersSecretPrefix = "roomcast_nats_users_"
	// natsRoutesSecretPrefix starts the name of the secret holding the cluster's route
	// password as ROOMCAST_ROUTE_PASSWORD and the route URLs carrying it as
	// ROOMCAST_ROUTES, mounted by the nodes of the cluster.
	natsRoutesSecretPrefix = "roomcast_nats_routes_"
	// minNATSPasswordBytes refuses a password that can be guessed.
	minNATSPasswordBytes = 16
)

// ensureNATSSecrets makes the NATS secrets from NATSAppPasswordFile and
// NATSRoutePasswordFile (the defaults made on first use) and puts their IDs in env:
// NATS_APP_SECRET_ID, NATS_USERS_SECRET_ID and NATS_ROUTES_SECRET_ID. A password is
// never logged.
func (r *Release) ensureNATSSecrets(ctx context.Context, env map[string]string) error {
	app := secretFile{
		variable: "NATS_APP_PASSWORD_FILE", file: r.Config.NATSAppPasswordFile, defaultFile: r.Config.DefaultNATSAppPasswordFile,
		prefix: natsAppSecretPrefix, label: "roomcast.nats",
		what: "the app's NATS password", keep: "NATS and the app are given it by just deploy",
		minBytes: minNATSPasswordBytes, refusal: "too weak a password",
	}
	route := secretFile{
		variable: "NATS_ROUTE_PASSWORD_FILE", file: r.Config.NATSRoutePasswordFile, defaultFile: r.Config.DefaultNATSRoutePasswordFile,
		what: "the NATS cluster's route password", keep: "the nodes of the cluster prove themselves with it",
		minBytes: minNATSPasswordBytes, refusal: "too weak a password",
	}
	appData, err := r.readSecretFile(app)
	if err != nil {
		return err
	}
	routeData, err := r.readSecretFile(route)
	if err != nil {
		return err
	}
	// The app trims white space from its password file (auth.ReadFile); NATS gets the same.
	appPassword, routePassword := strings.TrimSpace(string(appData)), strings.TrimSpace(string(routeData))
	for _, p := range []struct{ variable, file, password string }{
		{app.variable, app.file, appPassword}, {route.variable, route.file, routePassword},
	} {
		if strings.ContainsFunc(p.password, func(c rune) bool { return c == '"' || c == '\\' || unicode.IsSpace(c) || unicode.IsControl(c) }) {
			return fmt.Errorf("%s=%s: want a password without quotes, backslashes or white space (NATS reads it from a quoted string)", p.variable, p.file)
		}
	}
	if env["NATS_APP_SECRET_ID"], err = r.ensureSecretData(ctx, natsAppSecretPrefix, app.label, app.file, appData); err != nil {
		return err
	}
	if env["NATS_USERS_SECRET_ID"], err = r.ensureSecretData(ctx, natsUsersSecretPrefix, app.label, app.file, NATSUsersFile(appPassword)); err != nil {
		return err
	}
	env["NATS_ROUTES_SECRET_ID"], err = r.ensureSecretData(ctx, natsRoutesSecretPrefix, app.label, route.file, NATSRoutesFile(routePassword, natsRoutes...))
	return err
}

// NATSUsersFile is the file the NATS nodes include for the app's password
// (stack/nats-auth.conf), which holds no quote, backslash or white space.
func NATSUsersFile(password string) []byte {
	return fmt.Appendf(nil, "# Made by roomcast-release (stack/nats-auth.conf).\nROOMCAST_APP_PASSWORD: \"%s\"\n", password)
}

// natsRoutes are the members of the NATS cluster as routes reach them, one name each
// (stack/nats-cluster.yml): a member dials every one but its own.
var natsRoutes = []string{"edge_nats-1:6222", "edge_nats-2:6222", "edge_nats-3:6222"}

// NATSRoutesFile is the file the nodes of the NATS cluster include for their route
// password and the route URLs that carry it to routes (host:port;
// stack/nats-cluster.conf).
func NATSRoutesFile(password string, routes ...string) []byte {
	urls := make([]string, len(routes))
	for i, route := range routes {
		u := url.URL{Scheme: "nats", User: url.UserPassword("route", password), Host: route}
		urls[i] = `"` + u.String() + `"`
	}
	return fmt.Appendf(nil, "# Made by roomcast-release (stack/nats-cluster.conf).\nROOMCAST_ROUTE_PASSWORD: \"%s\"\nROOMCAST_ROUTES: [%s]\n", password, strings.Join(urls, ", "))
}
