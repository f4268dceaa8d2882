// Package flagenv lets every command-line flag be set from an environment
// variable: PREFIX_<FLAG>, upper case, '-' replaced by '_'. A flag given on
// the command line wins.
package flagenv

import (
	"flag"
	"fmt"
	"strings"
)

// Name returns the environment variable for flag name under prefix, for
// example Name("SIGIL_AUTHORITY", "data-dir") = "SIGIL_AUTHORITY_DATA_DIR".
func Name(prefix, name string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Apply sets every flag of fs not set on the command line from its
// environment variable, looked up with lookup (os.LookupEnv). Call it after
// fs.Parse. An invalid value is an error naming the variable.
func Apply(fs *flag.FlagSet, prefix string, lookup func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		env := Name(prefix, f.Name)
		v, ok := lookup(env)
		if !ok {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("%s: invalid value: %w", env, e)
		}
	})
	return err
}
