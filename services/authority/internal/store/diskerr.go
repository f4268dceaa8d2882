package store

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// mapWriteErr names a disk that refuses writes: no space (ENOSPC, or a
// quota: EDQUOT) or a read-only file system (EROFS). bbolt returns the
// system's error from its writes, and only its text from some (a failed
// file resize), so both are recognised. The result wraps ErrUnavailable
// (callers may retry once the disk is fixed) and ErrDiskFull or
// ErrReadOnly; any other error is returned as it is.
func mapWriteErr(err error) error {
	if err == nil {
		return nil
	}
	has := func(errno syscall.Errno) bool {
		return errors.Is(err, errno) || strings.Contains(err.Error(), errno.Error())
	}
	switch {
	case has(syscall.ENOSPC), has(syscall.EDQUOT):
		return fmt.Errorf("%w: %w: %v", ErrUnavailable, ErrDiskFull, err)
	case has(syscall.EROFS):
		return fmt.Errorf("%w: %w: %v", ErrUnavailable, ErrReadOnly, err)
	}
	return err
}
