package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/cambiumdb/cambium/commit"
	"github.com/cambiumdb/cambium/pgschema"
)

// Error is the JSON body of every error response. Code is stable; the other
// fields carry what the typed error needs to be rebuilt on the client.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Seq     int64  `json:"seq,omitempty"`
	Base    int64  `json:"base,omitempty"`
	Head    int64  `json:"head,omitempty"`
	Parent  int64  `json:"parent,omitempty"`
	Field   string `json:"field,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Got     uint32 `json:"got,omitempty"`
	Want    uint32 `json:"want,omitempty"`
	Kind    string `json:"kind,omitempty"`
}

// errorBody maps a typed error to its wire form and HTTP status.
func errorBody(err error) (int, Error) {
	e := Error{Message: err.Error()}
	var (
		stale    *commit.StaleBaseError
		ahead    *commit.BaseAheadError
		invalid  *commit.InvalidCommitError
		checksum *commit.ChecksumError
		parent   *commit.ParentMissingError
		bad      *pgschema.InvalidError
		tooLarge *http.MaxBytesError
		replay   *commit.ReplayError
		conflict *commit.ConflictError
		resolver *commit.ResolverError
	)
	switch {
	case errors.As(err, &stale):
		e.Code, e.Seq, e.Base, e.Head = commit.CodeStaleBase, stale.Seq, stale.Base, stale.Head
		return http.StatusConflict, e
	case errors.As(err, &ahead):
		e.Code, e.Seq, e.Base, e.Head = commit.CodeBaseAhead, ahead.Seq, ahead.Base, ahead.Head
		return http.StatusConflict, e
	case errors.As(err, &invalid):
		e.Code, e.Seq, e.Reason = commit.CodeInvalidCommit, invalid.Seq, invalid.Reason
		return http.StatusBadRequest, e
	case errors.As(err, &checksum):
		e.Code, e.Seq, e.Got, e.Want = commit.CodeBadChecksum, checksum.Seq, checksum.Got, checksum.Want
		return http.StatusBadRequest, e
	case errors.As(err, &parent):
		e.Code, e.Seq, e.Parent = commit.CodeParentMissing, parent.Seq, parent.Parent
		return http.StatusConflict, e
	case errors.As(err, &replay):
		e.Code, e.Seq, e.Kind, e.Reason = commit.CodeReplayRejected, replay.Seq, replay.Kind, replay.Reason
		return http.StatusConflict, e
	case errors.As(err, &conflict):
		e.Code, e.Seq, e.Base, e.Head, e.Reason = commit.CodeConflict, conflict.Seq, conflict.Base, conflict.Head, conflict.Reason
		return http.StatusConflict, e
	case errors.As(err, &resolver):
		e.Code, e.Seq, e.Reason = commit.CodeResolver, resolver.Seq, resolver.Reason
		return http.StatusConflict, e
	case errors.Is(err, pgschema.ErrMutatorNotFound):
		e.Code = commit.CodeUnknownMutator
		return http.StatusNotFound, e
	case errors.Is(err, ErrMalformed):
		e.Code = CodeMalformed
		return http.StatusBadRequest, e
	case errors.As(err, &tooLarge):
		e.Code = commit.CodeTooLarge
		return http.StatusRequestEntityTooLarge, e
	case errors.Is(err, pgschema.ErrVolumeNotFound):
		e.Code = commit.CodeUnknownVolume
		return http.StatusNotFound, e
	case errors.Is(err, pgschema.ErrVolumeExists):
		e.Code = commit.CodeVolumeExists
		return http.StatusConflict, e
	case errors.As(err, &bad):
		e.Code, e.Field, e.Reason = commit.CodeInvalid, bad.Field, bad.Reason
		return http.StatusBadRequest, e
	case errors.Is(err, ErrUnauthenticated):
		e.Code = CodeUnauthenticated
		return http.StatusUnauthorized, e
	case errors.Is(err, ErrForbidden):
		e.Code = CodeForbidden
		return http.StatusForbidden, e
	case errors.Is(err, pgschema.ErrTokenNotFound):
		e.Code = CodeUnknownToken
		return http.StatusNotFound, e
	case errors.Is(err, pgschema.ErrTokenExists):
		e.Code = CodeTokenExists
		return http.StatusConflict, e
	case errors.Is(err, commit.ErrUnavailable):
		e.Code = commit.CodeUnavailable
		return http.StatusServiceUnavailable, e
	default:
		e.Code = commit.CodeInternal
		return http.StatusInternalServerError, e
	}
}

// CodeMalformed is the code of a body that could not be decoded.
const CodeMalformed = "malformed"

// RemoteError is an error the server reported with a code this client does
// not know, or an internal one.
type RemoteError struct {
	Status int
	Code   string
	Msg    string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("server: %s (%s, HTTP %d)", e.Msg, e.Code, e.Status)
}

// Err turns a wire error back into the typed error the server had.
func (e Error) Err(status int) error {
	switch e.Code {
	case commit.CodeStaleBase:
		return &commit.StaleBaseError{Seq: e.Seq, Base: e.Base, Head: e.Head}
	case commit.CodeBaseAhead:
		return &commit.BaseAheadError{Seq: e.Seq, Base: e.Base, Head: e.Head}
	case commit.CodeInvalidCommit:
		return &commit.InvalidCommitError{Seq: e.Seq, Reason: e.Reason}
	case commit.CodeBadChecksum:
		return &commit.ChecksumError{Seq: e.Seq, Got: e.Got, Want: e.Want}
	case commit.CodeParentMissing:
		return &commit.ParentMissingError{Seq: e.Seq, Parent: e.Parent}
	case commit.CodeReplayRejected:
		return &commit.ReplayError{Seq: e.Seq, Kind: e.Kind, Reason: e.Reason}
	case commit.CodeConflict:
		return &commit.ConflictError{Seq: e.Seq, Base: e.Base, Head: e.Head, Reason: e.Reason}
	case commit.CodeResolver:
		return &commit.ResolverError{Seq: e.Seq, Reason: e.Reason}
	case commit.CodeUnknownMutator:
		return fmt.Errorf("%w: %s", pgschema.ErrMutatorNotFound, e.Message)
	case CodeMalformed:
		return &MalformedError{Reason: "server: " + e.Message}
	case commit.CodeUnknownVolume:
		return fmt.Errorf("%w: %s", pgschema.ErrVolumeNotFound, e.Message)
	case commit.CodeVolumeExists:
		return fmt.Errorf("%w: %s", pgschema.ErrVolumeExists, e.Message)
	case commit.CodeInvalid:
		return &pgschema.InvalidError{Field: e.Field, Reason: e.Reason}
	case commit.CodeUnavailable:
		return fmt.Errorf("%w: %s", commit.ErrUnavailable, e.Message)
	case CodeUnauthenticated:
		return &authError{sentinel: ErrUnauthenticated, msg: e.Message}
	case CodeForbidden:
		return &authError{sentinel: ErrForbidden, msg: e.Message}
	case CodeUnknownToken:
		return fmt.Errorf("%w: %s", pgschema.ErrTokenNotFound, e.Message)
	case CodeTokenExists:
		return fmt.Errorf("%w: %s", pgschema.ErrTokenExists, e.Message)
	}
	return &RemoteError{Status: status, Code: e.Code, Msg: e.Message}
}
