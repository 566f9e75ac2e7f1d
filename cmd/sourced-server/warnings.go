package main

import (
	"go.uber.org/zap"
)

// warnUnsafe warns, at start and loudly, about settings that work but
// expose or lose data: keys sent in clear text over the network, events
// kept only in memory on a server others reach, metrics served in plain
// HTTP to the network. (Listening beyond loopback without keys is refused
// unless -insecure-no-keys says so; see run.) Each warning names its fix.
func warnUnsafe(c config, keyed, loopback bool, log *zap.Logger) error {
	if keyed && !loopback && c.tlsCert == "" {
		log.Warn("UNSAFE: keys travel in clear text: the server listens beyond loopback in plain HTTP",
			zap.String("addr", c.addr),
			zap.String("fix", "serve HTTPS with -tls-cert and -tls-key, or keep the address on a private network behind a proxy that terminates TLS"))
	}
	if !loopback && c.data == "" && c.postgres == "" {
		log.Warn("UNSAFE: events are kept in memory only and are lost when the process stops, yet the server listens beyond loopback",
			zap.String("addr", c.addr),
			zap.String("fix", "keep events with -data FILE or -postgres (SOURCED_POSTGRES_URL); memory is for tests and CI"))
	}
	if c.metricsAddr != "" {
		mloop, err := isLoopback(c.metricsAddr)
		if err != nil {
			return err
		}
		if !mloop {
			log.Warn("metrics are served in plain HTTP without keys beyond loopback",
				zap.String("metrics_addr", c.metricsAddr),
				zap.String("fix", "keep -metrics-addr on a private network (or loopback with a local scraper); it holds counts, never data or keys"))
		}
	}
	return nil
}
