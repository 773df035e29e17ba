package compress

import (
	"bytes"
	stdgzip "compress/gzip"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
)

// TestCodec_IsRegisteredAndSpeaksGzip: gRPC's "gzip" is this codec, what it
// writes the standard library reads, and what the standard library writes
// it reads (agents and masters of either build talk to each other).
func TestCodec_IsRegisteredAndSpeaksGzip(t *testing.T) {
	c := encoding.GetCompressor(Name)
	if _, ok := c.(*codec); !ok {
		t.Fatalf("gzip codec is %T, want this package's", c)
	}
	msg := []byte(strings.Repeat(`{"uri":"/api/items/1","status":"200"}`, 500))
	for range 3 { // pooled writers and readers are reused
		var buf bytes.Buffer
		w, err := c.Compress(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if buf.Len() >= len(msg)/4 {
			t.Errorf("compressed to %d of %d bytes", buf.Len(), len(msg))
		}
		zr, err := stdgzip.NewReader(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(zr); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("standard gzip read %d bytes (%v), want %d", len(got), err, len(msg))
		}

		var std bytes.Buffer
		zw := stdgzip.NewWriter(&std)
		_, _ = zw.Write(msg)
		_ = zw.Close()
		r, err := c.Decompress(&std)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("read %d bytes (%v) of standard gzip, want %d", len(got), err, len(msg))
		}
		if cl, ok := r.(io.Closer); ok {
			_ = cl.Close()
		}
	}
	if _, err := c.Decompress(strings.NewReader("not gzip")); err == nil {
		t.Error("decompressing junk: no error")
	}
}
