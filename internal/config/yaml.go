package config

import (
	"reflect"

	"go.yaml.in/yaml/v3"
)

func unmarshalYAML(s string, out any) error {
	return yaml.Unmarshal([]byte(s), out)
}

// clearNamedMaps sets to nil every map field of the struct v that the YAML
// mapping n names, at any depth, so that decoding n replaces those maps
// instead of adding n's keys to them.
func clearNamedMaps(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode || v.Kind() != reflect.Struct {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		f, ok := yamlField(v.Type(), n.Content[i].Value)
		if !ok {
			continue
		}
		switch fv := v.FieldByIndex(f.Index); fv.Kind() {
		case reflect.Map:
			fv.Set(reflect.Zero(fv.Type()))
		case reflect.Struct:
			clearNamedMaps(n.Content[i+1], fv)
		}
	}
}
