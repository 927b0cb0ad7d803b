package envconfig_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/envconfig"
)

type sample struct {
	Port    int           `env:"S_PORT" envDefault:"80" help:"the port"`
	Wait    time.Duration `env:"S_WAIT" envDefault:"5s" help:"how long"`
	Ratio   float64       `env:"S_RATIO" envDefault:"0.5"`
	On      bool          `env:"S_ON"`
	Hosts   []string      `env:"S_HOSTS"`
	Secret  string        `env:"S_SECRET" secret:"true" help:"a key"`
	skipped string
}

func TestParseNamesTheBadVariable(t *testing.T) {
	tests := []struct {
		env     map[string]string
		name    string
		allowed string
	}{
		{map[string]string{"S_PORT": "eighty"}, "S_PORT", "integer"},
		{map[string]string{"S_WAIT": "5"}, "S_WAIT", "duration"},
		{map[string]string{"S_RATIO": "half"}, "S_RATIO", "number"},
		{map[string]string{"S_ON": "yes please"}, "S_ON", "true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := envconfig.Parse[sample](tt.env)
			var e *envconfig.Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v, want *envconfig.Error", err)
			}
			if e.Var != tt.name || e.Value != tt.env[tt.name] || !strings.Contains(e.Allowed, tt.allowed) {
				t.Fatalf("got %+v", e)
			}
			if msg := e.Error(); !strings.Contains(msg, tt.name+`="`+tt.env[tt.name]+`"`) {
				t.Fatalf("message %q does not show the variable and value", msg)
			}
		})
	}
}

func TestParseDefaultsAndValues(t *testing.T) {
	cfg, err := envconfig.Parse[sample](map[string]string{"S_PORT": "", "S_HOSTS": "a,b", "S_ON": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 80 || cfg.Wait != 5*time.Second || cfg.Ratio != 0.5 || !cfg.On || len(cfg.Hosts) != 2 {
		t.Fatalf("got %+v", cfg)
	}
}

func TestUsageAndLogValue(t *testing.T) {
	var b strings.Builder
	envconfig.Usage(&b, sample{})
	for _, want := range []string{"S_PORT", "80", "the port", "S_WAIT", "5s", "S_SECRET", "(empty)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "skipped") {
		t.Error("usage lists an unexported field")
	}
	v := envconfig.LogValue(sample{Port: 1, Secret: "hunter2"})
	if v.Kind() != slog.KindGroup {
		t.Fatalf("kind %v", v.Kind())
	}
	for _, a := range v.Group() {
		if a.Key == "S_SECRET" && a.Value.String() == "hunter2" {
			t.Fatal("secret logged in clear")
		}
	}
}

type Section struct {
	Port int    `env:"PORT" envDefault:"81" help:"the section's port"`
	Key  string `env:"KEY" secret:"true"`
}

type nested struct {
	Port  int     `env:"N_PORT" envDefault:"80"`
	Inner Section `envPrefix:"N_INNER_"`
	Section
}

func TestSectionsAreVariablesToo(t *testing.T) {
	cfg, err := envconfig.Parse[nested](map[string]string{"N_INNER_PORT": "90", "N_INNER_KEY": "k1", "KEY": "k2"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 80 || cfg.Inner.Port != 90 || cfg.Inner.Key != "k1" || cfg.Section.Port != 81 || cfg.Key != "k2" {
		t.Fatalf("got %+v", cfg)
	}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"N_INNER_PORT": "x"}, "N_INNER_PORT"},
		{map[string]string{"PORT": "x"}, "PORT"},
		{map[string]string{"N_PORT": "1", "N_INNER_PORT": "x"}, "N_INNER_PORT"},
	} {
		_, err := envconfig.Parse[nested](tt.env)
		var e *envconfig.Error
		if !errors.As(err, &e) || e.Var != tt.want {
			t.Errorf("env %v: got %v, want an error naming %s", tt.env, err, tt.want)
		}
	}
	var b strings.Builder
	envconfig.Usage(&b, nested{})
	for _, want := range []string{"N_PORT", "N_INNER_PORT", "the section's port", "N_INNER_KEY"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, b.String())
		}
	}
	for _, a := range envconfig.LogValue(cfg).Group() {
		if strings.HasSuffix(a.Key, "KEY") && a.Value.String() != "********" {
			t.Errorf("%s logged as %q", a.Key, a.Value.String())
		}
	}
}

func TestMaskUserinfo(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://alice:hunter2@nats:4222", "nats://alice:********@nats:4222"},
		{"nats://s3cr3t-token@nats:4222", "nats://********@nats:4222"},
		{"alice:hunter2@nats:4222", "alice:********@nats:4222"},
		{"nats://a:p%40ss@n1:4222, nats://n2:4222,tls://tok@n3", "nats://a:********@n1:4222, nats://n2:4222,tls://********@n3"},
		{"nats://n1:4222/path@odd", "nats://n1:4222/path@odd"},
		{"nats://u:p@w@n1", "nats://u:********@n1"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := envconfig.MaskUserinfo(tt.in); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	type withURL struct {
		URL string `env:"S_URL" secret:"userinfo"`
	}
	for _, a := range envconfig.LogValue(withURL{URL: "nats://u:hunter2@n"}).Group() {
		if strings.Contains(a.Value.String(), "hunter2") {
			t.Fatalf("%s logged with its password: %s", a.Key, a.Value)
		}
	}
}

type allowedList []string

func (l *allowedList) UnmarshalText(b []byte) error {
	if strings.Contains(string(b), "!") {
		return errors.New("no bangs")
	}
	*l = strings.Split(string(b), ",")
	return nil
}

func (allowedList) Allowed() string { return "want words without bangs" }

func TestParseUsesATypesOwnAllowed(t *testing.T) {
	type cfg struct {
		Words allowedList `env:"S_WORDS"`
	}
	_, err := envconfig.Parse[cfg](map[string]string{"S_WORDS": "a,b!"})
	var e *envconfig.Error
	if !errors.As(err, &e) || e.Var != "S_WORDS" || e.Allowed != "want words without bangs" {
		t.Fatalf("got %v", err)
	}
}
