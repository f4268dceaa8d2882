package token

import (
	"testing"
)

func BenchmarkVerify(b *testing.B) {
	codec := defaultCodec(b)
	keys := testKeys()
	tok := mustMint(b, codec, testClaims(), testKey)
	tests := []struct {
		name string
		tok  string
		ok   bool
	}{
		{name: "valid", tok: tok, ok: true},
		{name: "bad checksum", tok: tok[:len(tok)-1] + "!"},
		{name: "bad signature", tok: mustMint(b, codec, testClaims(), otherKey)},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.tok)))
			for b.Loop() {
				if _, err := codec.Verify(tc.tok, keys); (err == nil) != tc.ok {
					b.Fatalf("Verify: %v", err)
				}
			}
		})
	}
}

func BenchmarkMint(b *testing.B) {
	codec := defaultCodec(b)
	claims := testClaims()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := codec.Mint(claims, testKey); err != nil {
			b.Fatal(err)
		}
	}
}
