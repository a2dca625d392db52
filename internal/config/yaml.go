package config

import "go.yaml.in/yaml/v3"

func unmarshalYAML(s string, out any) error {
	return yaml.Unmarshal([]byte(s), out)
}
