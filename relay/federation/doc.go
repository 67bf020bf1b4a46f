// Package federation lets home servers of different domains relay for
// each other's users.
package federation
