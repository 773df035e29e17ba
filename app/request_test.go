package app

import (
	"errors"
	"testing"

	"github.com/google/uuid"
)

type bindServer struct {
	Address string `json:"address"`
	Weight  *int   `json:"weight"`
}

type bindBody struct {
	Name    string            `json:"name"`
	ID      uuid.UUID         `json:"id"`
	Servers []bindServer      `json:"servers"`
	Labels  map[string]string `json:"labels"`
	Port    uint16            `json:"port"`
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		body   string
		fields []string
	}{
		{"AcceptsValidBody", `{"name":"a","servers":[{"address":"x:1","weight":2}],"labels":{"k":"v"},"port":80}`, nil},
		{"RejectsNonObject", `[1,2]`, []string{"body"}},
		{"RejectsEmptyBody", ``, []string{"body"}},
		{"RejectsTrailingData", `{"name":"a"} {}`, []string{"body"}},
		{"RejectsMalformed", `{"name":`, []string{"body"}},
		{"NamesUnknownTopLevelField", `{"nam":"a"}`, []string{"nam"}},
		{"NamesUnknownNestedFieldWithIndex", `{"servers":[{"address":"x:1"},{"adress":"y"}]}`, []string{"servers[1].adress"}},
		{"NamesTypeMismatchWithIndex", `{"servers":[{"address":"x:1","weight":"heavy"}]}`, []string{"servers[0].weight"}},
		{"NamesEveryBadField", `{"name":1,"port":70000,"labels":{"k":2}}`, []string{"labels.k", "name", "port"}},
		{"RejectsFractionForInteger", `{"port":1.5}`, []string{"port"}},
		{"RejectsNumberForUUID", `{"id":5}`, []string{"id"}},
		{"RejectsMalformedUUID", `{"id":"nope"}`, []string{"id"}},
		{"AcceptsNullForPointer", `{"servers":[{"address":"x","weight":null}]}`, nil},
		{"AcceptsMultibyteAndSurrogatePairs", `{"name":"héllo ✓ \ud83d\ude00 \u00e9","labels":{"\u2713":"\\ud800"}}`, nil},
		{"RejectsInvalidUTF8", "{\"name\":\"a\xffb\"}", []string{"name"}},
		{"RejectsUTF8EncodedSurrogate", "{\"name\":\"\xed\xa0\x80\"}", []string{"name"}},
		{"RejectsInvalidUTF8InNestedValue", "{\"servers\":[{\"address\":\"x\"},{\"address\":\"\xc3\"}]}", []string{"servers[1].address"}},
		{"RejectsInvalidUTF8InKey", "{\"labels\":{\"k\xff\":\"v\"}}", []string{"labels.k\uFFFD"}},
		{"RejectsLoneHighSurrogate", `{"name":"\ud800"}`, []string{"name"}},
		{"RejectsLoneLowSurrogate", `{"labels":{"k":"x\udc00"}}`, []string{"labels.k"}},
		{"RejectsHighSurrogateWithoutLow", `{"name":"\ud800\u0041"}`, []string{"name"}},
		{"RejectsReversedSurrogatePair", `{"name":"\ude00\ud83d"}`, []string{"name"}},
		{"RejectsDuplicateKey", `{"name":"a","port":1,"name":"b"}`, []string{"name"}},
		{"RejectsDuplicateKeySpelledWithEscape", `{"name":"a","\u006eame":"b"}`, []string{"name"}},
		{"RejectsDuplicateNestedKey", `{"labels":{"k":"1","k":"2"}}`, []string{"labels.k"}},
		{"RejectsDuplicateKeyInArrayElement", `{"servers":[{"address":"x"},{"address":"y","address":"z"}]}`, []string{"servers[1].address"}},
		{"AcceptsSameKeyInSiblingObjects", `{"servers":[{"address":"x"},{"address":"y"}],"labels":{"address":"z"}}`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var dst bindBody
			err := DecodeJSON([]byte(tc.body), &dst)
			if tc.fields == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want ValidationError, got %v", err)
			}
			var got []string
			for _, f := range ve.Fields {
				got = append(got, f.Field)
			}
			if len(got) != len(tc.fields) {
				t.Fatalf("fields = %v, want %v", got, tc.fields)
			}
			for i := range got {
				if got[i] != tc.fields[i] {
					t.Fatalf("fields = %v, want %v", got, tc.fields)
				}
			}
		})
	}
}
