package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// What bbolt keeps in each of its two meta pages, after a 16-byte page
// header: magic, version, page size, flags, root bucket (page, sequence),
// freelist page, high water mark (pgid), transaction id, checksum (FNV-64a
// of the fields before it). Integers in the machine's byte order, as bbolt
// writes them.
const (
	bboltMagic      = 0xED0CDAED
	bboltVersion    = 2
	pageHeaderSize  = 16
	metaSize        = 64
	metaChecksumEnd = 56
)

type bboltMeta struct {
	pageSize uint32
	pgid     uint64 // the high water mark: pages 0 to pgid-1 are in use
	txid     uint64
}

// readMetaPage reads and checks the meta page at offset off.
func readMetaPage(f *os.File, off int64) (bboltMeta, error) {
	buf := make([]byte, pageHeaderSize+metaSize)
	if _, err := f.ReadAt(buf, off); err != nil {
		return bboltMeta{}, err
	}
	m := buf[pageHeaderSize:]
	le := binary.NativeEndian
	if le.Uint32(m[0:4]) != bboltMagic {
		return bboltMeta{}, ErrUnknownFormat
	}
	if le.Uint32(m[4:8]) != bboltVersion {
		return bboltMeta{}, fmt.Errorf("%w: bbolt version %d", ErrUnknownFormat, le.Uint32(m[4:8]))
	}
	h := fnv.New64a()
	_, _ = h.Write(m[:metaChecksumEnd])
	if h.Sum64() != le.Uint64(m[56:64]) {
		return bboltMeta{}, fmt.Errorf("%w: meta page checksum", ErrDamaged)
	}
	return bboltMeta{pageSize: le.Uint32(m[8:12]), pgid: le.Uint64(m[40:48]), txid: le.Uint64(m[48:56])}, nil
}

// checkFile looks at an existing file before bbolt maps it: bbolt trusts
// its meta pages and dies (SIGSEGV, no recover) or panics when the file is
// shorter than they say. It returns ok=false when there is no file yet (a
// new store), ErrDamaged when the file is empty or shorter than its newest
// valid meta page says, and ErrUnknownFormat when it is no bbolt file.
func checkFile(path string) (exists bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return true, err
	}
	size := st.Size()
	if size == 0 {
		return true, fmt.Errorf("%w: the file is empty (0 bytes), not a new store: remove it to start afresh, or restore it from a backup", ErrDamaged)
	}
	m0, err0 := readMetaPage(f, 0)
	pageSize := int64(os.Getpagesize())
	if err0 == nil {
		pageSize = int64(m0.pageSize)
	}
	var m1 bboltMeta
	err1 := io.ErrUnexpectedEOF
	if pageSize > 0 && pageSize <= 1<<20 {
		m1, err1 = readMetaPage(f, pageSize)
	}
	var newest bboltMeta
	switch {
	case err0 == nil && err1 == nil:
		newest = m0
		if m1.txid > m0.txid {
			newest = m1
		}
	case err0 == nil:
		newest = m0
	case err1 == nil:
		newest = m1
	case errors.Is(err0, ErrDamaged) || errors.Is(err1, ErrDamaged):
		return true, fmt.Errorf("%w: both meta pages fail their checksum", ErrDamaged)
	case errors.Is(err0, io.EOF) || errors.Is(err0, io.ErrUnexpectedEOF):
		return true, fmt.Errorf("%w: %d bytes, too short for a bbolt file", ErrUnknownFormat, size)
	default:
		return true, fmt.Errorf("%w: no bbolt meta page", ErrUnknownFormat)
	}
	if newest.pageSize == 0 {
		return true, fmt.Errorf("%w: page size 0 in the meta page", ErrDamaged)
	}
	if need := int64(newest.pgid) * int64(newest.pageSize); size < need {
		return true, fmt.Errorf("%w: the file is %d bytes, its meta page says %d pages of %d bytes (%d bytes): it was cut short (a copy that did not finish?); restore it from a backup",
			ErrDamaged, size, newest.pgid, newest.pageSize, need)
	}
	return true, nil
}
