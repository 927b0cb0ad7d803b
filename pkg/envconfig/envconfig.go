// Package envconfig parses a binary's configuration struct from an environment map
// with caarlos0/env, and gives every binary the same behaviour around it: an invalid
// value is one *Error naming the variable, the value and what is allowed; -h output is
// generated from the struct tags; the configuration is logged with secrets masked.
//
// Struct fields use the tags env, envDefault, help (one line shown by Usage) and
// secret:"true" (masked by LogValue; secret:"userinfo" masks only the credentials of
// the URLs in a comma-separated list). A field whose type parses itself (an
// encoding.TextUnmarshaler) may say what it accepts with an Allowed() string method. A struct field without an env tag is a section:
// its fields are variables too (with the section's envPrefix, if it has one), so a
// binary's configuration can nest the sections its components own.
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
		if name, ok := badVariable(reflect.TypeFor[T](), pe, environ); ok {
			return cfg, &Error{Var: name, Value: environ[name], Allowed: allowedFor(pe.Type)}
		}
	}
	return cfg, fmt.Errorf("parsing environment: %w", agg.Errors[0])
}

// badVariable finds the variable behind a parse error, which names only the Go field:
// of the fields of that name and type (sections may repeat a name), the first that is
// set and does not parse, else the first that is set.
func badVariable(t reflect.Type, pe env.ParseError, environ map[string]string) (string, bool) {
	var set []string
	eachFieldType(t, "", func(f reflect.StructField, name string) {
		if f.Name == pe.Name && f.Type == pe.Type {
			if _, ok := environ[name]; ok {
				set = append(set, name)
			}
		}
	})
	for _, name := range set {
		if !parses(environ[name], pe.Type) {
			return name, true
		}
	}
	if len(set) > 0 {
		return set[0], true
	}
	return "", false
}

// parses reports whether s is a valid value of a scalar type t (other types: true).
func parses(s string, t reflect.Type) bool {
	var err error
	switch {
	case t == reflect.TypeFor[time.Duration]():
		_, err = time.ParseDuration(s)
	case t.Kind() == reflect.Bool:
		_, err = strconv.ParseBool(s)
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		_, err = strconv.ParseInt(s, 10, t.Bits())
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		_, err = strconv.ParseUint(s, 10, t.Bits())
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		_, err = strconv.ParseFloat(s, t.Bits())
	}
	return err == nil
}

func envName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return name
}

func allowedFor(t reflect.Type) string {
	if a, ok := reflect.Zero(t).Interface().(interface{ Allowed() string }); ok {
		return a.Allowed()
	}
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
	eachField(cfg, func(f reflect.StructField, name string, _ reflect.Value) {
		def, ok := f.Tag.Lookup("envDefault")
		switch {
		case !ok || def == "":
			def = "(empty)"
		}
		if d := f.Tag.Get("defaultHelp"); d != "" {
			def = d
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", name, def, f.Tag.Get("help"))
	})
	_ = tw.Flush()
}

// LogValue is cfg as a log attribute group, one attribute per variable, with fields
// tagged secret:"true" masked.
func LogValue(cfg any) slog.Value {
	var attrs []slog.Attr
	eachField(cfg, func(f reflect.StructField, name string, v reflect.Value) {
		val := fmt.Sprint(v.Interface())
		switch f.Tag.Get("secret") {
		case "true":
			if !v.IsZero() {
				val = masked
			}
		case "userinfo":
			val = MaskUserinfo(val)
		}
		attrs = append(attrs, slog.String(name, val))
	})
	return slog.GroupValue(attrs...)
}

const masked = "********"

// MaskUserinfo returns a comma-separated list of URLs with their credentials masked: the
// password of user:password@, or the whole of token@ (a NATS token).
func MaskUserinfo(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		scheme, rest, ok := strings.Cut(u, "://")
		if !ok {
			scheme, rest = "", u
		} else {
			scheme += "://"
		}
		authority := rest
		if end := strings.IndexAny(rest, "/?#"); end >= 0 {
			authority = rest[:end]
		}
		at := strings.LastIndex(authority, "@")
		if at < 0 {
			continue
		}
		user := masked
		if name, _, ok := strings.Cut(authority[:at], ":"); ok {
			user = name + ":" + masked
		}
		parts[i] = scheme + user + rest[at:]
	}
	return strings.Join(parts, ",")
}

// eachField calls fn for every variable of cfg, sections included, in field order,
// with the variable's full name.
func eachField(cfg any, fn func(f reflect.StructField, name string, v reflect.Value)) {
	eachValue(reflect.Indirect(reflect.ValueOf(cfg)), "", fn)
}

func eachValue(v reflect.Value, prefix string, fn func(reflect.StructField, string, reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		switch {
		case !f.IsExported():
		case isSection(f):
			eachValue(v.Field(i), prefix+f.Tag.Get("envPrefix"), fn)
		case envName(f) != "":
			fn(f, prefix+envName(f), v.Field(i))
		}
	}
}

func eachFieldType(t reflect.Type, prefix string, fn func(reflect.StructField, string)) {
	for i := range t.NumField() {
		f := t.Field(i)
		switch {
		case !f.IsExported():
		case isSection(f):
			eachFieldType(f.Type, prefix+f.Tag.Get("envPrefix"), fn)
		case envName(f) != "":
			fn(f, prefix+envName(f))
		}
	}
}

// isSection: a struct field with no variable of its own whose fields are variables.
func isSection(f reflect.StructField) bool {
	return envName(f) == "" && f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Time]()
}

// Environ returns the process environment as the map Parse and run functions take.
func Environ() map[string]string { return env.ToMap(os.Environ()) }
