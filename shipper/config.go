package shipper

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/ferrysync/ferry/format"
)

// SourceConfig is one source of a shipper's YAML config file:
//
//	sources:
//	  - name: orders
//	    dir: /var/lib/legacy/changes
//	  - name: billing
//	    dir: /var/lib/billing/changes
type SourceConfig struct {
	Name string
	Dir  string
}

// ParseSources reads the "sources" value of a decoded YAML config file (a
// list of maps with name and dir). A nil value is no sources. Names must be
// valid source names and unique (each is one subject of the stream).
func ParseSources(v any) ([]SourceConfig, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("shipper: config key \"sources\" must be a list of {name, dir}, not %T", v)
	}
	var out []SourceConfig
	seen := map[string]int{}
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("shipper: config sources[%d] must be a map with name and dir, not %T", i, item)
		}
		var sc SourceConfig
		for k, val := range m {
			s, ok := val.(string)
			if !ok {
				return nil, fmt.Errorf("shipper: config sources[%d].%s must be a string, not %T", i, k, val)
			}
			switch k {
			case "name":
				sc.Name = s
			case "dir":
				sc.Dir = s
			default:
				return nil, fmt.Errorf("shipper: config sources[%d]: unknown key %q (want name and dir)", i, k)
			}
		}
		if err := format.CheckSource(sc.Name); err != nil {
			return nil, fmt.Errorf("shipper: config sources[%d].name: %w", i, err)
		}
		if sc.Dir == "" {
			return nil, fmt.Errorf("shipper: config sources[%d] (%s): dir is missing", i, sc.Name)
		}
		if j, dup := seen[sc.Name]; dup {
			return nil, fmt.Errorf("shipper: config sources[%d] and sources[%d] are both named %q: one shipper per source", j, i, sc.Name)
		}
		seen[sc.Name] = i
		out = append(out, sc)
	}
	return out, nil
}

// checkSource checks a source's name and that its segment directory is
// one. A directory that does not exist is refused rather than created: a
// mistyped directory would otherwise ship nothing, silently, forever.
func checkSource(dir, source string) error {
	if err := format.CheckSource(source); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: segment directory %s does not exist: check the directory (--dir), or start the legacy's writer first (ferry write and format.OpenWriter create it)", ErrInvalidOption, dir)
	case err != nil:
		return fmt.Errorf("%w: segment directory %s: %v", ErrInvalidOption, dir, err)
	case !fi.IsDir():
		return fmt.Errorf("%w: segment directory %s is not a directory", ErrInvalidOption, dir)
	}
	return nil
}
