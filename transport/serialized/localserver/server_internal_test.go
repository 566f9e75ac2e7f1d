package localserver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestListenHasTimeoutsAndNewServerHasNone(t *testing.T) {
	s, err := Listen("127.0.0.1:0", nil)
	require.NoError(t, err)
	defer s.Close()
	assert.Equal(t, 10*time.Second, s.srv.ReadHeaderTimeout)
	assert.Equal(t, 60*time.Second, s.srv.ReadTimeout)
	assert.Equal(t, 90*time.Second, s.srv.WriteTimeout)
	assert.Equal(t, 2*time.Minute, s.srv.IdleTimeout)

	test := NewServer(nil)
	defer test.Close()
	assert.Zero(t, test.srv.ReadHeaderTimeout+test.srv.ReadTimeout+test.srv.WriteTimeout+test.srv.IdleTimeout,
		"a test server, like httptest's, sets no timeouts")
}
