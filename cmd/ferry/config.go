package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// applyConfig fills the flags of fs that were not set on the command line,
// first from FERRY_<FLAG> environment variables (FERRY_NATS, FERRY_READY_LAG…),
// then from the YAML config file's top-level keys named like the flags.
// Precedence: flags > environment > config file > defaults. It returns the
// whole decoded file (nil without one) for keys that are not flags, such as
// a shipper's list of sources.
func applyConfig(fs *flag.FlagSet, env *Env, configPath string) (map[string]any, error) {
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

// parseFlags parses a subcommand's arguments, then fills the flags they left
// unset from FERRY_* variables and the config file (--config, or
// FERRY_CONFIG), as applyConfig says. ok is false when -h printed the usage.
// Positional arguments are refused unless positional is set.
func parseFlags(fs *flag.FlagSet, env *Env, args []string, positional bool) (file map[string]any, ok bool, err error) {
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
	file, err = applyConfig(fs, env, path)
	if err != nil {
		return nil, false, &exitError{code: 2, err: fmt.Errorf("%s: %w", fs.Name(), err)}
	}
	return file, true, nil
}
