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

// Parse parses args (without the program name) into fs, refuses positional
// arguments, then applies the environment as Apply does. The flag package's
// own errors (flag.ErrHelp among them) are returned as they are; the others
// start with "config: ", as every configuration error does.
func Parse(fs *flag.FlagSet, args []string, prefix string, lookup func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}
	if err := Apply(fs, prefix, lookup); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}
