// Package envconfig parses a binary's configuration struct from an environment map
// with caarlos0/env, and gives every binary the same behaviour around it: an invalid
// value is one *Error naming the variable, the value and what is allowed; -h output is
// generated from the struct tags; the configuration is logged with secrets masked.
//
// Struct fields use the tags env, envDefault, help (one line shown by Usage) and
// secret:"true" (masked by LogValue).
package envconfig

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caarlos0/env/v11"
)

// Error is an invalid environment value.
type Error struct {
	Var     string
	Value   string
	Allowed string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid %s=%s: %s", e.Var, strconv.Quote(e.Value), e.Allowed)
}

// Invalid returns an *Error for variable name, whose raw value is looked up in environ.
func Invalid(environ map[string]string, name, allowed string) error {
	return &Error{Var: name, Value: environ[name], Allowed: allowed}
}

// Parse fills a T from environ. Any failure is an *Error for the first bad variable.
func Parse[T any](environ map[string]string) (T, error) {
	cfg, err := env.ParseAsWithOptions[T](env.Options{Environment: environ})
	if err == nil {
		return cfg, nil
	}
	var agg env.AggregateError
	if !errors.As(err, &agg) || len(agg.Errors) == 0 {
		return cfg, fmt.Errorf("parsing environment: %w", err)
	}
	var pe env.ParseError
	if errors.As(agg.Errors[0], &pe) {
		if f, ok := reflect.TypeFor[T]().FieldByName(pe.Name); ok {
			name := envName(f)
			return cfg, &Error{Var: name, Value: environ[name], Allowed: allowedFor(f.Type)}
		}
	}
	return cfg, fmt.Errorf("parsing environment: %w", agg.Errors[0])
}

func envName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return name
}

func allowedFor(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "want a duration such as 500ms, 5s or 1m"
	case t.Kind() == reflect.Bool:
		return "want true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "want an integer"
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		return "want a non-negative integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "want a number"
	case t.Kind() == reflect.Slice:
		return "want a comma-separated list of " + strings.TrimPrefix(allowedFor(t.Elem()), "want ")
	default:
		return "want a " + t.String()
	}
}

// Usage writes one entry per variable of cfg (a struct or pointer to one): name,
// default and help text.
func Usage(w io.Writer, cfg any) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  VARIABLE\tDEFAULT\tMEANING")
	eachField(cfg, func(f reflect.StructField, _ reflect.Value) {
		def, ok := f.Tag.Lookup("envDefault")
		switch {
		case !ok || def == "":
			def = "(empty)"
		}
		if d := f.Tag.Get("defaultHelp"); d != "" {
			def = d
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", envName(f), def, f.Tag.Get("help"))
	})
	_ = tw.Flush()
}

// LogValue is cfg as a log attribute group, one attribute per variable, with fields
// tagged secret:"true" masked.
func LogValue(cfg any) slog.Value {
	var attrs []slog.Attr
	eachField(cfg, func(f reflect.StructField, v reflect.Value) {
		val := fmt.Sprint(v.Interface())
		if f.Tag.Get("secret") == "true" && !v.IsZero() {
			val = "********"
		}
		attrs = append(attrs, slog.String(envName(f), val))
	})
	return slog.GroupValue(attrs...)
}

func eachField(cfg any, fn func(reflect.StructField, reflect.Value)) {
	v := reflect.Indirect(reflect.ValueOf(cfg))
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if envName(f) == "" || !f.IsExported() {
			continue
		}
		fn(f, v.Field(i))
	}
}

// Environ returns the process environment as the map Parse and run functions take.
func Environ() map[string]string { return env.ToMap(os.Environ()) }
