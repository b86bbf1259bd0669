//go:build !yaegi

package plugin

// interpreted is true when the tests run in Yaegi (`yaegi test -tags
// yaegi`, see interpreted_yaegi_test.go).
const interpreted = false
