// Package forwardauth serves HTTP forward authentication on the authorizer
// (--http-listen), for reverse proxies that ask an HTTP endpoint before
// passing a request on: nginx auth_request, Traefik ForwardAuth, Caddy
// forward_auth. It decides with the same Engine, route policy (--routes)
// and readiness rule as Envoy ext_authz, so both answer alike.
//
// GET (or any method) /v1/authz, with the original request named by
// X-Original-Method and X-Original-URI (nginx) or X-Forwarded-Method and
// X-Forwarded-Uri (Traefik, Caddy), and its Authorization header and org
// header passed along. Answers:
//   - 200 with X-Sigil-Token-Id and X-Sigil-Org-Id: allowed (the proxy
//     copies them to the product and must drop Authorization);
//   - 200 without them: no route under default: allow;
//   - 401 with WWW-Authenticate: Bearer, 403, 400: denied, with the JSON
//     body ext_authz uses;
//   - 503: not synced or stale (fail closed, as CheckPermission).
//
// A request naming its original request both ways, with different values,
// is refused (400): a client behind a proxy that sets only one pair could
// otherwise smuggle the other pair past it and have another path checked.
package forwardauth

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/sigil-auth/sigil/services/authorizer/internal/extauthz"
)

// Path is the forward-auth endpoint.
const Path = "/v1/authz"

// Headers of the original request and of the answer.
const (
	HeaderOriginalMethod  = "X-Original-Method"
	HeaderOriginalURI     = "X-Original-URI"
	HeaderForwardedMethod = "X-Forwarded-Method"
	HeaderForwardedURI    = "X-Forwarded-Uri"
	HeaderTokenID         = "X-Sigil-Token-Id"
	HeaderOrgID           = "X-Sigil-Org-Id"
)

// Bounds of the HTTP server: requests are headers only (a body is never
// read), as large as a proxy passes on.
const (
	MaxHeaderBytes    = 64 << 10
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 10 * time.Second
	WriteTimeout      = 10 * time.Second
	IdleTimeout       = 60 * time.Second
)

// Handler answers forward-auth requests with engine.
func Handler(engine *extauthz.Engine) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(Path, func(w http.ResponseWriter, r *http.Request) {
		method, uri, ok := original(r.Header)
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		if !ok {
			writeDenial(w, http.StatusBadRequest, "", "invalid_request", "missing_original_request")
			return
		}
		v, err := engine.Decide(r.Context(), method, uri, func(name string) string { return r.Header.Get(name) })
		if err != nil {
			writeDenial(w, http.StatusServiceUnavailable, "", "unavailable", "unavailable")
			return
		}
		switch {
		case v.Allowed:
			h.Set(HeaderTokenID, v.TokenID)
			h.Set(HeaderOrgID, v.OrgID)
			w.WriteHeader(http.StatusOK)
		case v.PassThrough:
			w.WriteHeader(http.StatusOK)
		default:
			writeDenial(w, v.HTTPStatus, v.WWWAuthenticate, v.Error, v.Reason)
		}
	})
	return mux
}

// original returns the original request's method and URI.
func original(h http.Header) (method, uri string, ok bool) {
	om, ou := h.Get(HeaderOriginalMethod), h.Get(HeaderOriginalURI)
	fm, fu := h.Get(HeaderForwardedMethod), h.Get(HeaderForwardedURI)
	switch {
	case om != "" && ou != "":
		if (fm != "" && fm != om) || (fu != "" && fu != ou) {
			return "", "", false
		}
		return om, ou, true
	case fm != "" && fu != "":
		if (om != "" && om != fm) || (ou != "" && ou != fu) {
			return "", "", false
		}
		return fm, fu, true
	}
	return "", "", false
}

func writeDenial(w http.ResponseWriter, status int, www, errName, reason string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if www != "" {
		h.Set("WWW-Authenticate", www)
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(extauthz.Body(errName, reason)))
}

// Server is a running forward-auth server.
type Server struct {
	srv  *http.Server
	lis  net.Listener
	done chan struct{}
}

// Listen starts serving engine's forward-auth on addr; the log line
// "forward-auth listening" gives the bound address.
func Listen(addr string, engine *extauthz.Engine, logger *slog.Logger) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{lis: lis, done: make(chan struct{}), srv: &http.Server{
		Handler:           Handler(engine),
		MaxHeaderBytes:    MaxHeaderBytes,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}}
	logger.Info("forward-auth listening", "addr", lis.Addr().String(), "path", Path)
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("forward-auth server stopped", "error", err)
		}
	}()
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Close stops the server, letting in-flight checks finish within bound.
func (s *Server) Close(bound time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}
