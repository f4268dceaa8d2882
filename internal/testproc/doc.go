// Package testproc is the tests' shared harness for the real binaries and
// their output: a concurrency-safe buffer for logs.
package testproc
