package control

import (
	"errors"
	"testing"
)

func TestDecodeWarmup(t *testing.T) {
	cases := []struct {
		body string
		ok   bool
	}{
		{`{"tag":"train"}`, true},
		{`{"query":"a and not b","mode":"check"}`, true},
		{`{"inos":[1,2,3],"threads":16,"mode":"evict"}`, true},
		{`{}`, false},
		{`{"tag":"a","query":"a"}`, false},
		{`{"tag":"a,b"}`, false},
		{`{"query":"a and ("}`, false},
		{`{"tag":"t","mode":"delete"}`, false},
		{`{"tag":"t","threads":-1}`, false},
		{`{"tag":"t","threads":100000}`, false},
		{`{"tag":`, false},
		{`[]`, false},
	}
	for _, c := range cases {
		_, err := DecodeWarmup([]byte(c.body))
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", c.body, err, c.ok)
		}
		var be BadRequest
		if err != nil && !errors.As(err, &be) {
			t.Errorf("%s: %v is not a BadRequest", c.body, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"tag":"train"}`, `{"query":"a or (b and not c)"}`, `{"inos":[1],"mode":"check"}`,
		`{"expr":"cat"}`, `{"ino":5,"limit":3}`, `{"lazy":true}`, ``, `null`, `{"limit":-1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if req, err := DecodeWarmup(body); err == nil {
			if req.Threads < 0 || req.Threads > MaxThreads || len(req.Inos) > MaxWarmupInos {
				t.Fatalf("accepted %+v", req)
			}
		}
		if req, err := DecodeRelated(body); err == nil && (req.Limit <= 0 || req.Limit > MaxRelatedLimit) {
			t.Fatalf("accepted related limit %d", req.Limit)
		}
		if _, e, err := DecodeFind(body); err == nil && e == nil {
			t.Fatal("find accepted without an expression")
		}
		_, _ = DecodeUnmount(body)
	})
}
