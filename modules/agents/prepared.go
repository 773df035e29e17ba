package agents

import (
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/nxmesh/nxmesh/proto/compress"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// A change reaches every stream of a workspace with the same ConfigUpdate
// (agents that every target treats alike share one, see DesiredConfigs), so
// the message is encoded and compressed once and the same bytes go on
// every stream (gRPC's PreparedMsg), instead of once per agent: for a
// thousand agents that was most of what sending cost.
//
// gRPC prepares a message with the compression of what the agent sends,
// which is also what the master sends only when the agent both sends gzip
// (stated in MessageEncodingMetadata) and accepts it: such streams share
// prepared messages; any other stream encodes its own.

// preparedMax and preparedMaxBytes bound the prepared messages kept (their
// number, and their encoded size before compression); past either they are
// dropped and encoded again when needed. Each serves one change's fan-out.
const (
	preparedMax      = 32
	preparedMaxBytes = 32 << 20
)

// MessageEncodingMetadata is the request metadata key of an agent's stream
// in which the agent states the compression of what it sends
// (controlplane.MessageEncodingMetadata on the agent's side).
const MessageEncodingMetadata = "nxmesh-message-encoding"

// preparedKey identifies a message as sent: the update and the message's
// timestamp.
type preparedKey struct {
	update    *agentv1.ConfigUpdate
	timestamp int64
}

// preparedEntry is a message encoded once, by the first stream to need it.
type preparedEntry struct {
	once sync.Once
	msg  *grpc.PreparedMsg
	err  error
}

// preparedMessages holds the messages prepared for the hub's streams.
type preparedMessages struct {
	mu      sync.Mutex
	entries map[preparedKey]*preparedEntry
	bytes   int // encoded size of the entries' messages
}

// get returns m (a ConfigUpdate message) prepared for streams that send
// and accept gzip, encoding it on stream (one of them) if none did yet.
func (p *preparedMessages) get(stream grpc.ServerStream, m *agentv1.MasterMessage) (*grpc.PreparedMsg, error) {
	k := preparedKey{update: m.GetConfigUpdate(), timestamp: m.GetTimestamp()}
	p.mu.Lock()
	e := p.entries[k]
	if e == nil {
		size := proto.Size(m)
		if p.entries == nil || len(p.entries) >= preparedMax || p.bytes+size > preparedMaxBytes {
			p.entries, p.bytes = map[preparedKey]*preparedEntry{}, 0
		}
		e = &preparedEntry{}
		p.entries[k] = e
		p.bytes += size
	}
	p.mu.Unlock()
	e.once.Do(func() {
		msg := &grpc.PreparedMsg{}
		if e.err = msg.Encode(stream, m); e.err == nil {
			e.msg = msg
		}
	})
	return e.msg, e.err
}

// sharesPrepared reports whether the agent of stream sends gzip-compressed
// messages and accepts them: its stream can take prepared messages.
func sharesPrepared(stream grpc.ServerStream) bool {
	md, _ := metadata.FromIncomingContext(stream.Context())
	return acceptsGzip(stream.Context()) && slices.Equal(md.Get(MessageEncodingMetadata), []string{compress.Name})
}

// sendMessage sends m on the stream: a configuration update as prepared
// for every stream like this one, anything else as it is.
func (c *conn) sendMessage(m *agentv1.MasterMessage) error {
	if m.GetConfigUpdate() == nil || !c.prepared {
		return c.stream.Send(m)
	}
	p, err := c.hub.prepared.get(c.stream, m)
	if err != nil {
		// Encoding failed where sending would fail the same way, with
		// the error the caller reports.
		return c.stream.Send(m)
	}
	return c.stream.SendMsg(p)
}
