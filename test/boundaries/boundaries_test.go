// Package boundaries checks the ownership rules of STYLE.md: which packages may import
// the token, the database and each other. A rule broken here is a design decision to
// make on purpose, not an accident to merge.
package boundaries

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/hsmkms/hsmkms"

// owners: an import matching a prefix is allowed only in these package directories
// (and their tests).
var owners = []struct {
	imports string
	allowed []string
}{
	{"github.com/miekg/pkcs11", []string{"hsm"}},
	{"github.com/ThalesIgnite/crypto11", []string{"hsm"}},
	{"database/sql", []string{"meta"}},
	{"modernc.org/sqlite", []string{"meta"}},
	{"github.com/urfave/cli", []string{"cmd/hsmkms"}},
	{"github.com/prometheus", []string{"cmd/internal/admin"}},
}

// leaves import no package of this module (their test kits, such as hsm/hsmtest, may).
var leaves = []string{"hsm", "meta", "softhsm", "kmip/msg", "kmip/wire"}

func TestImportBoundaries(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	imports := map[string]map[string]bool{} // package dir -> imports of its non-test files
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules" || d.Name() == "data") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir, _ := filepath.Rel(root, filepath.Dir(path))
		if imports[dir] == nil {
			imports[dir] = map[string]bool{}
		}
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			imports[dir][p] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(imports) < 10 {
		t.Fatalf("found only %d packages under %s", len(imports), root)
	}
	for dir, ims := range imports {
		for im := range ims {
			for _, o := range owners {
				if strings.HasPrefix(im, o.imports) && !within(dir, o.allowed) {
					t.Errorf("%s imports %s, which only %v may", dir, im, o.allowed)
				}
			}
			for _, leaf := range leaves {
				if dir == leaf && strings.HasPrefix(im, module+"/") {
					t.Errorf("%s is a leaf but imports %s", dir, im)
				}
			}
		}
	}
}

func within(dir string, allowed []string) bool {
	for _, a := range allowed {
		if dir == a || strings.HasPrefix(dir, a+string(os.PathSeparator)) {
			return true
		}
	}
	return false
}
