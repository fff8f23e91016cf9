package fusefs

// Code written by a script from go-fuse v2.12.1's RawFileSystem: a next layer
// for unit tests that records the node ids and handles every call carries.

import (
	"reflect"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// recordingFS is a fake next layer: it answers every operation with the
// status in answer (OK by default) and records the node ids it was asked
// about. Tests of a layer wrap one and read what reached it.
type recordingFS struct {
	mu     sync.Mutex
	calls  []string
	nodes  []uint64
	answer fuse.Status
	// hooks answer chosen operations instead.
	getAttr func(in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status
	open    func(in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status
	read    func(in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status)
	release func(in *fuse.ReleaseIn)
}

// nodeFields are the fields of FUSE inputs that name nodes.
var nodeFields = []string{"NodeId", "Newdir", "NodeIdOut", "Oldnodeid"}

func (r *recordingFS) saw(op string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, op)
	for _, a := range args {
		v := reflect.ValueOf(a)
		if v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().Kind() == reflect.Struct {
			for _, f := range nodeFields {
				if fv := v.Elem().FieldByName(f); fv.IsValid() && fv.Kind() == reflect.Uint64 {
					r.nodes = append(r.nodes, fv.Uint())
				}
			}
		}
	}
}

func (r *recordingFS) status() fuse.Status { return r.answer }

func (r *recordingFS) String() string { return "recording" }

func (r *recordingFS) SetDebug(debug bool) {}

func (r *recordingFS) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) (status fuse.Status) {
	r.saw("Lookup", header, name, out)
	return r.status()
}

func (r *recordingFS) Forget(nodeid, nlookup uint64) {
	r.mu.Lock()
	r.calls = append(r.calls, "Forget")
	r.nodes = append(r.nodes, nodeid)
	r.mu.Unlock()
}

func (r *recordingFS) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	r.saw("GetAttr", input)
	if r.getAttr != nil {
		return r.getAttr(input, out)
	}
	return r.status()
}

func (r *recordingFS) SetAttr(cancel <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) (code fuse.Status) {
	r.saw("SetAttr", input, out)
	return r.status()
}

func (r *recordingFS) Mknod(cancel <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) (code fuse.Status) {
	r.saw("Mknod", input, name, out)
	return r.status()
}

func (r *recordingFS) Mkdir(cancel <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) (code fuse.Status) {
	r.saw("Mkdir", input, name, out)
	return r.status()
}

func (r *recordingFS) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) (code fuse.Status) {
	r.saw("Unlink", header, name)
	return r.status()
}

func (r *recordingFS) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) (code fuse.Status) {
	r.saw("Rmdir", header, name)
	return r.status()
}

func (r *recordingFS) Rename(cancel <-chan struct{}, input *fuse.RenameIn, oldName string, newName string) (code fuse.Status) {
	r.saw("Rename", input, oldName, newName)
	return r.status()
}

func (r *recordingFS) Link(cancel <-chan struct{}, input *fuse.LinkIn, filename string, out *fuse.EntryOut) (code fuse.Status) {
	r.saw("Link", input, filename, out)
	return r.status()
}

func (r *recordingFS) Symlink(cancel <-chan struct{}, header *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) (code fuse.Status) {
	r.saw("Symlink", header, pointedTo, linkName, out)
	return r.status()
}

func (r *recordingFS) Readlink(cancel <-chan struct{}, header *fuse.InHeader) (out []byte, code fuse.Status) {
	r.saw("Readlink", header)
	return nil, r.status()
}

func (r *recordingFS) Access(cancel <-chan struct{}, input *fuse.AccessIn) (code fuse.Status) {
	r.saw("Access", input)
	return r.status()
}

func (r *recordingFS) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (sz uint32, code fuse.Status) {
	r.saw("GetXAttr", header, attr, dest)
	return 0, r.status()
}

func (r *recordingFS) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	r.saw("ListXAttr", header, dest)
	return 0, r.status()
}

func (r *recordingFS) SetXAttr(cancel <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	r.saw("SetXAttr", input, attr, data)
	return r.status()
}

func (r *recordingFS) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string) (code fuse.Status) {
	r.saw("RemoveXAttr", header, attr)
	return r.status()
}

func (r *recordingFS) Create(cancel <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) (code fuse.Status) {
	r.saw("Create", input, name, out)
	return r.status()
}

func (r *recordingFS) Tmpfile(cancel <-chan struct{}, input *fuse.CreateIn, out *fuse.CreateOut) (code fuse.Status) {
	r.saw("Tmpfile", input, out)
	return r.status()
}

func (r *recordingFS) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	r.saw("Open", input)
	if r.open != nil {
		return r.open(input, out)
	}
	return r.status()
}

func (r *recordingFS) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	r.saw("Read", input)
	if r.read != nil {
		return r.read(input, buf)
	}
	return nil, r.status()
}

func (r *recordingFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	r.saw("Lseek", in, out)
	return r.status()
}

func (r *recordingFS) GetLk(cancel <-chan struct{}, input *fuse.LkIn, out *fuse.LkOut) (code fuse.Status) {
	r.saw("GetLk", input, out)
	return r.status()
}

func (r *recordingFS) SetLk(cancel <-chan struct{}, input *fuse.LkIn) (code fuse.Status) {
	r.saw("SetLk", input)
	return r.status()
}

func (r *recordingFS) SetLkw(cancel <-chan struct{}, input *fuse.LkIn) (code fuse.Status) {
	r.saw("SetLkw", input)
	return r.status()
}

func (r *recordingFS) Release(cancel <-chan struct{}, input *fuse.ReleaseIn) {
	r.saw("Release", input)
	if r.release != nil {
		r.release(input)
	}
}

func (r *recordingFS) Write(cancel <-chan struct{}, input *fuse.WriteIn, data []byte) (written uint32, code fuse.Status) {
	r.saw("Write", input, data)
	return 0, r.status()
}

func (r *recordingFS) Writev(cancel <-chan struct{}, input *fuse.WriteIn, data [][]byte) (written uint32, code fuse.Status) {
	r.saw("Writev", input, data)
	return 0, r.status()
}

func (r *recordingFS) CopyFileRange(cancel <-chan struct{}, input *fuse.CopyFileRangeIn) (written uint32, code fuse.Status) {
	r.saw("CopyFileRange", input)
	return 0, r.status()
}

func (r *recordingFS) Ioctl(cancel <-chan struct{}, input *fuse.IoctlIn, inbuf []byte, output *fuse.IoctlOut, outbuf []byte) (code fuse.Status) {
	r.saw("Ioctl", input, inbuf, output, outbuf)
	return r.status()
}

func (r *recordingFS) Flush(cancel <-chan struct{}, input *fuse.FlushIn) fuse.Status {
	r.saw("Flush", input)
	return r.status()
}

func (r *recordingFS) Fsync(cancel <-chan struct{}, input *fuse.FsyncIn) (code fuse.Status) {
	r.saw("Fsync", input)
	return r.status()
}

func (r *recordingFS) Fallocate(cancel <-chan struct{}, input *fuse.FallocateIn) (code fuse.Status) {
	r.saw("Fallocate", input)
	return r.status()
}

func (r *recordingFS) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) (status fuse.Status) {
	r.saw("OpenDir", input, out)
	return r.status()
}

func (r *recordingFS) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	r.saw("ReadDir", input, out)
	return r.status()
}

func (r *recordingFS) ReadDirPlus(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	r.saw("ReadDirPlus", input, out)
	return r.status()
}

func (r *recordingFS) ReleaseDir(input *fuse.ReleaseIn) { r.saw("ReleaseDir", input) }

func (r *recordingFS) FsyncDir(cancel <-chan struct{}, input *fuse.FsyncIn) (code fuse.Status) {
	r.saw("FsyncDir", input)
	return r.status()
}

func (r *recordingFS) StatFs(cancel <-chan struct{}, input *fuse.InHeader, out *fuse.StatfsOut) (code fuse.Status) {
	r.saw("StatFs", input, out)
	return r.status()
}

func (r *recordingFS) Statx(cancel <-chan struct{}, input *fuse.StatxIn, out *fuse.StatxOut) (code fuse.Status) {
	r.saw("Statx", input, out)
	return r.status()
}

func (r *recordingFS) Init(*fuse.Server) {}

func (r *recordingFS) OnUnmount() {}

var _ fuse.RawFileSystem = (*recordingFS)(nil)
