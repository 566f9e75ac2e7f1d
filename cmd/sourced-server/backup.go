package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// boltBacked is a store kept in a bbolt file that it can copy while it
// serves (the bolt transport's DB).
type boltBacked interface{ DB() *bbolt.DB }

// backupPath is where a bolt store's hot backup is served.
const backupPath = "GET /backup"

// backupHandler serves a consistent copy of a bolt store's file, taken in
// one read transaction while writes go on, behind the API's keys; nil when
// the store is not a bolt file.
func backupHandler(backend any, access, secret string, log *zap.Logger) http.Handler {
	b, ok := backend.(boltBacked)
	if !ok {
		return nil
	}
	a, s := sha256.Sum256([]byte(access)), sha256.Sum256([]byte(secret))
	keyed := access != ""
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if keyed {
			ga := sha256.Sum256([]byte(r.Header.Get("Serialized-Access-Key")))
			gs := sha256.Sum256([]byte(r.Header.Get("Serialized-Secret-Access-Key")))
			if subtle.ConstantTimeCompare(ga[:], a[:])&subtle.ConstantTimeCompare(gs[:], s[:]) != 1 {
				http.Error(w, "missing or invalid access keys", http.StatusUnauthorized)
				return
			}
		}
		began := time.Now()
		var n int64
		err := b.DB().View(func(tx *bbolt.Tx) error {
			h := w.Header()
			h.Set("Content-Type", "application/octet-stream")
			h.Set("Content-Length", strconv.FormatInt(tx.Size(), 10))
			h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="sourced-%s.db"`, began.UTC().Format("20060102T150405Z")))
			var err error
			n, err = tx.WriteTo(w)
			return err
		})
		if err != nil {
			log.Error("backup failed", zap.Int64("bytes", n), zap.Error(err))
			return
		}
		log.Info("backup", zap.Int64("bytes", n), zap.Duration("duration", time.Since(began)))
	})
}
