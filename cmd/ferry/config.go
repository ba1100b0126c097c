package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// applyConfig fills the flags of fs that were not set on the command line,
// first from FERRY_<FLAG> environment variables (FERRY_NATS, FERRY_READY_LAG…),
// then from the YAML config file's top-level keys named like the flags.
// Precedence: flags > environment > config file > defaults. It returns the
// whole decoded file (nil without one) for keys that are not flags, such as
// a shipper's list of sources; a key that is neither a flag nor one of
// extra is refused (a mistyped key would otherwise be ignored silently).
func applyConfig(fs *flag.FlagSet, env *Env, configPath string, extra ...string) (map[string]any, error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var file map[string]any
	if configPath != "" {
		data, err := os.ReadFile(configPath)
		if err != nil {
			return nil, fmt.Errorf("reading config file: %w", err)
		}
		if err := yaml.Unmarshal(data, &file); err != nil {
			return nil, fmt.Errorf("config file %s: %w", configPath, err)
		}
		if err := checkKeys(fs, file, configPath, extra); err != nil {
			return nil, err
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		key := "FERRY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := env.Getenv(key); v != "" {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("environment %s=%q: %w", key, v, serr)
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			var s string
			switch v := v.(type) {
			case []any:
				parts := make([]string, len(v))
				for i, p := range v {
					parts[i] = fmt.Sprint(p)
				}
				s = strings.Join(parts, ",")
			default:
				s = fmt.Sprint(v)
			}
			if serr := fs.Set(f.Name, s); serr != nil {
				err = fmt.Errorf("config file %s: key %q = %q: %w", configPath, f.Name, s, serr)
			}
		}
	})
	return file, err
}

// checkKeys refuses the keys of a config file that are neither flags of fs
// nor in extra, suggesting the flag meant.
func checkKeys(fs *flag.FlagSet, file map[string]any, path string, extra []string) error {
	var unknown []string
	for k := range file {
		if fs.Lookup(k) == nil && !slices.Contains(extra, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	k := unknown[0]
	hint := ""
	if guess := strings.ToLower(strings.ReplaceAll(k, "_", "-")); fs.Lookup(guess) != nil {
		hint = fmt.Sprintf(" (did you mean %q? keys are named like the flags)", guess)
	} else {
		hint = " (keys are named like the flags: see " + fs.Name() + " -h)"
	}
	return fmt.Errorf("config file %s: unknown key %q%s", path, k, hint)
}

// parseFlags parses a subcommand's arguments, then fills the flags they left
// unset from FERRY_* variables and the config file (--config, or
// FERRY_CONFIG), as applyConfig says. ok is false when -h printed the usage.
// Positional arguments are refused unless positional is set. extra names
// the config file's keys that are not flags but the command reads.
func parseFlags(fs *flag.FlagSet, env *Env, args []string, positional bool, extra ...string) (file map[string]any, ok bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, false, nil
		}
		return nil, false, &exitError{code: 2, err: errUsageShown}
	}
	if !positional && fs.NArg() > 0 {
		fs.Usage()
		return nil, false, &exitError{code: 2, err: fmt.Errorf("%s: unexpected arguments %q", fs.Name(), fs.Args())}
	}
	path := ""
	if f := fs.Lookup("config"); f != nil {
		path = f.Value.String()
		if path == "" {
			path = env.Getenv("FERRY_CONFIG")
			f.Value.Set(path) // so that the command can name the file in its errors
		}
	}
	file, err = applyConfig(fs, env, path, extra...)
	if err != nil {
		return nil, false, &exitError{code: 2, err: fmt.Errorf("%s: %w", fs.Name(), err)}
	}
	return file, true, nil
}
