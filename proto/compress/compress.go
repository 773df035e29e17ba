// Package compress replaces gRPC's registered "gzip" codec, on the master
// and on the agent, with github.com/klauspost/compress's gzip at its fastest
// level: the same wire format (any gzip peer reads it), about three times
// less CPU per message than the standard library's default level, for a
// compression ratio a few percent lower. Access-log batches are the largest
// messages an agent sends, and at high request rates their compression was
// the agent's main cost.
//
// Importing the package is enough: its init runs after gRPC's own gzip
// package (which it imports) and registers over it.
package compress

import (
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"google.golang.org/grpc/encoding"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
)

// Name is the codec's name on the wire, gRPC's gzip.Name.
const Name = grpcgzip.Name

// Level is the compression level of what is sent.
const Level = gzip.BestSpeed

func init() {
	c := &codec{}
	c.writers.New = func() any {
		w, err := gzip.NewWriterLevel(io.Discard, Level)
		if err != nil {
			panic(err) // Level is a constant gzip accepts
		}
		return &writer{Writer: w, pool: &c.writers}
	}
	encoding.RegisterCompressor(c)
}

type codec struct {
	writers sync.Pool
	readers sync.Pool
}

// Name implements encoding.Compressor.
func (c *codec) Name() string { return Name }

// Compress implements encoding.Compressor.
func (c *codec) Compress(w io.Writer) (io.WriteCloser, error) {
	z := c.writers.Get().(*writer)
	z.Reset(w)
	return z, nil
}

// Decompress implements encoding.Compressor.
func (c *codec) Decompress(r io.Reader) (io.Reader, error) {
	z, pooled := c.readers.Get().(*reader)
	if !pooled {
		nz, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		return &reader{Reader: nz, pool: &c.readers}, nil
	}
	if err := z.Reset(r); err != nil {
		c.readers.Put(z)
		return nil, err
	}
	return z, nil
}

type writer struct {
	*gzip.Writer
	pool *sync.Pool
}

// Close flushes the stream and returns the writer to its pool.
func (z *writer) Close() error {
	defer z.pool.Put(z)
	return z.Writer.Close()
}

type reader struct {
	*gzip.Reader
	pool *sync.Pool
}

// Close returns the reader to its pool.
func (z *reader) Close() error {
	defer z.pool.Put(z)
	return z.Reader.Close()
}
