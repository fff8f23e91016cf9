package tagging

import (
	"bytes"
	"image"
	"image/png"
	"slices"
	"testing"
)

func pngOf(t *testing.T, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, w, h))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRules(t *testing.T) {
	o := DefaultAutoOptions()
	cases := []struct {
		name string
		path string
		head []byte
		want []string
	}{
		{"dataset image", "/data/train/cat/001.png", pngOf(t, 640, 480), []string{"train", "cat", "image", "image-medium"}},
		{"small image", "/icons/x.png", pngOf(t, 32, 32), []string{"icons", "image", "image-small"}},
		{"large image", "/a.png", pngOf(t, 2048, 100), []string{"image", "image-large"}},
		{"text keywords", "/notes/n.txt", []byte("graph graph graph storage storage the the the filesystem filesystem"), []string{"notes", "text", "kw:graph", "kw:filesystem", "kw:storage"}},
		{"hidden directory skipped", "/.cache/x.bin", []byte{0, 1, 2, 3}, nil},
		{"extension only", "/v/clip.mkv", []byte{0x1a, 0x45, 0xdf, 0xa3, 0, 0}, []string{"v", "video"}},
		{"empty file by extension", "/a/b.pdf", nil, []string{"a", "pdf"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Rules(o, c.path, c.head)
			if !slices.Equal(got, c.want) {
				t.Fatalf("Rules(%q) = %v, want %v", c.path, got, c.want)
			}
		})
	}
}

func TestKeywords(t *testing.T) {
	got := Keywords([]byte("Alpha alpha ALPHA beta beta gamma; with with with with"), 5)
	if !slices.Equal(got, []string{"alpha", "beta"}) {
		t.Fatalf("Keywords = %v", got)
	}
	if got := Keywords(nil, 3); len(got) != 0 {
		t.Fatalf("Keywords(nil) = %v", got)
	}
}
