// Package deploy holds the container image and the tests that validate the
// deployment files (docker-compose.yml, Dockerfile) without a Docker engine.
package deploy
