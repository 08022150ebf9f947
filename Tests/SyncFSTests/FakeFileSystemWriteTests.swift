import Foundation
import SyncCore
@testable import SyncFS
import XCTest

/// The fake's write side: POSIXFileSystem's errnos, its durability model under `crash()`, its
/// faults and `beforeOperation`.
final class FakeFileSystemWriteTests: XCTestCase {
    private var fs: FakeFileSystem!

    override func setUp() {
        fs = FakeFileSystem()
    }

    /// The errno `body` threw (nil when it did not throw; -1 for an error of another type).
    static func code(_ body: () throws -> Void) -> Int32? {
        do { try body(); return nil } catch let e as FileSystemError { return e.errno } catch { return -1 }
    }

    private func assertErrno(_ expected: Int32?, _ what: String, file: StaticString = #filePath, line: UInt = #line,
                             _ body: () throws -> Void) {
        XCTAssertEqual(Self.code(body), expected, what, file: file, line: line)
    }

    private func write(_ fs: FakeFileSystem, _ path: String, _ text: String, sync: Bool = false, mode: UInt32 = 0o644) throws {
        let f = try fs.createFile(path, mode: mode)
        try Array(text.utf8).withUnsafeBytes { try f.write($0, at: 0) }
        if sync { try f.synchronize() }
        f.close()
    }

    private func text(_ path: String, in fs: FakeFileSystem? = nil) -> String? {
        (fs ?? self.fs).snapshot()[path]?.content.map { String(decoding: $0, as: UTF8.self) }
    }

    /// A file, a directory with a file, a symlink to it, a dangling symlink.
    private func standardTree() {
        fs.write("plain", Array("f".utf8))
        fs.write("sub/x", Array("inside".utf8))
        fs.symlink("inner", target: "sub")
        fs.symlink("dangling", target: "nowhere/at/all")
    }

    // MARK: errnos

    func test_makeDirectory() throws {
        standardTree()
        try fs.makeDirectory("a/b/c", mode: 0o777)
        XCTAssertEqual(fs.snapshot()["a"]?.kind, .directory, "missing parents are made")
        XCTAssertEqual(fs.snapshot()["a/b/c"]?.mode, 0o755, "the mode less the umask")
        for taken in ["plain", "sub", "inner", "dangling", "a/b/c"] {
            assertErrno(EEXIST, "mkdir onto \(taken)") { try fs.makeDirectory(taken, mode: 0o755) }
        }
        for through in ["plain/new", "inner/new", "dangling/new", "plain/deeper/new"] {
            assertErrno(ENOTDIR, "mkdir \(through)") { try fs.makeDirectory(through, mode: 0o755) }
        }
        for bad in ["", "a//b", "../x", "./x", "a/..", "/abs", "caf\u{E9}", "x%e9"] {
            assertErrno(EINVAL, "mkdir \(bad)") { try fs.makeDirectory(bad, mode: 0o755) }
        }
        assertErrno(ENAMETOOLONG, "a 256-byte name") { try fs.makeDirectory(String(repeating: "n", count: 256), mode: 0o755) }
        assertErrno(nil, "a 255-byte name") { try fs.makeDirectory(String(repeating: "n", count: 255), mode: 0o755) }
        XCTAssertNil(fs.snapshot()["sub/new"], "nothing was made through the symlink")
    }

    func test_createFile_andItsWriter() throws {
        standardTree()
        let f = try fs.createFile("d/e/new", mode: 0o666)
        XCTAssertEqual(fs.snapshot()["d/e/new"], FakeFileSystem.Entry(kind: .file, mode: 0o644, content: []))
        try [UInt8]("world".utf8).withUnsafeBytes { try f.write($0, at: 6) }
        XCTAssertEqual(fs.snapshot()["d/e/new"]?.content, [0, 0, 0, 0, 0, 0] + Array("world".utf8), "a write past the end zero-fills")
        try [UInt8]("hello ".utf8).withUnsafeBytes { try f.write($0, at: 0) }
        XCTAssertEqual(text("d/e/new"), "hello world")
        XCTAssertEqual(fs.read("d/e/new", offset: 6, count: 5), Array("world".utf8))
        XCTAssertNil(fs.read("d/e/new", offset: 7, count: 5), "past the end")
        XCTAssertEqual(fs.read("d/e/new", offset: 100, count: 0), [])
        try f.truncate(5)
        XCTAssertEqual(text("d/e/new"), "hello")
        try f.truncate(7)
        XCTAssertEqual(fs.snapshot()["d/e/new"]?.content, Array("hello".utf8) + [0, 0], "a hole reads as zeros")
        try f.setMode(0o600)
        try f.setModificationTime(-1_500_000_000)
        f.startWriteBack(offset: 0, count: 7)
        try f.synchronize()
        XCTAssertEqual(try fs.metadata("d/e/new")?.mode, 0o600)
        XCTAssertEqual(try fs.metadata("d/e/new")?.mtimeNs, -1_500_000_000)
        XCTAssertEqual(try fs.metadata("d/e/new")?.size, 7)
        f.close()
        assertErrno(EBADF, "a closed writer") { try [UInt8]([1]).withUnsafeBytes { try f.write($0, at: 0) } }
        assertErrno(EBADF, "a closed writer") { try f.synchronize() }

        for taken in ["plain", "sub", "inner", "dangling", "d/e/new"] {
            assertErrno(EEXIST, "create onto \(taken)") { _ = try fs.createFile(taken, mode: 0o644) }
        }
        for through in ["plain/x", "inner/x", "dangling/x", "sub/x/y"] {
            assertErrno(ENOTDIR, "create \(through)") { _ = try fs.createFile(through, mode: 0o644) }
        }
        assertErrno(EINVAL, "the root") { _ = try fs.createFile("", mode: 0o644) }
        XCTAssertEqual(text("sub/x"), "inside")
    }

    func test_rename() throws {
        standardTree()
        fs.mkdir("empty")
        fs.write("full/f", [1])
        fs.link("plain", "twin")
        assertErrno(ENOENT, "a missing source") { try fs.rename("missing", to: "x", replacing: true) }
        assertErrno(ENOENT, "a missing source's parent") { try fs.rename("missing/x", to: "x", replacing: true) }
        assertErrno(EEXIST, "not replacing") { try fs.rename("sub/x", to: "plain", replacing: false) }
        assertErrno(EEXIST, "not replacing a dangling link") { try fs.rename("sub/x", to: "dangling", replacing: false) }
        assertErrno(EEXIST, "not replacing itself") { try fs.rename("plain", to: "plain", replacing: false) }
        assertErrno(EINVAL, "a directory into itself") { try fs.rename("sub", to: "sub/in/deep", replacing: true) }
        XCTAssertEqual(fs.snapshot()["sub/in"]?.kind, .directory, "the target's parents were made before rename(2) refused")
        assertErrno(ENOTEMPTY, "onto its own ancestor") { try fs.rename("sub/x", to: "sub", replacing: true) }
        assertErrno(ENOTDIR, "a directory onto a file") { try fs.rename("empty", to: "plain", replacing: true) }
        assertErrno(ENOTDIR, "a directory onto a symlink") { try fs.rename("empty", to: "inner", replacing: true) }
        assertErrno(EISDIR, "a file onto a directory") { try fs.rename("plain", to: "empty", replacing: true) }
        assertErrno(EISDIR, "a symlink onto a directory") { try fs.rename("inner", to: "empty", replacing: true) }
        assertErrno(ENOTEMPTY, "a directory onto a non-empty one") { try fs.rename("empty", to: "full", replacing: true) }
        assertErrno(ENOTDIR, "from through a symlink") { try fs.rename("inner/x", to: "stolen", replacing: true) }
        assertErrno(ENOTDIR, "onto through a symlink") { try fs.rename("plain", to: "inner/x", replacing: true) }
        assertErrno(ENOTDIR, "from through a file") { try fs.rename("plain/x", to: "stolen", replacing: true) }

        let before = fs.snapshot()
        assertErrno(nil, "itself") { try fs.rename("sub", to: "sub", replacing: true) }
        assertErrno(nil, "two names of one file") { try fs.rename("plain", to: "twin", replacing: true) }
        XCTAssertEqual(fs.snapshot(), before, "rename(2) of one inode onto itself changes nothing")

        try fs.rename("full", to: "empty", replacing: true)          // a directory onto an empty one
        XCTAssertEqual(fs.snapshot()["empty/f"]?.content, [1])
        XCTAssertNil(fs.snapshot()["full"])
        try fs.rename("plain", to: "inner", replacing: true)          // replaces the link, not its target
        XCTAssertEqual(fs.snapshot()["inner"]?.kind, .file)
        XCTAssertEqual(fs.snapshot()["inner"]?.links, 2, "still a twin")
        XCTAssertEqual(fs.snapshot()["sub/x"]?.content, Array("inside".utf8))
        try fs.rename("dangling", to: "new/place", replacing: false)  // a symlink moves itself; parents made
        XCTAssertEqual(fs.snapshot()["new/place"]?.symlinkTarget, "nowhere/at/all")
        try fs.rename("inner", to: "twin", replacing: true)         // one inode: nothing happens
        XCTAssertEqual(fs.snapshot()["inner"]?.links, 2)
        try fs.remove("twin")
        XCTAssertEqual(fs.snapshot()["inner"]?.links, 1)
    }

    func test_link() throws {
        standardTree()
        try fs.link("plain", to: "d/twin")
        XCTAssertEqual(fs.snapshot()["plain"]?.links, 2)
        fs.write("d/twin", Array("changed".utf8))
        XCTAssertEqual(text("plain"), "changed", "one inode, two names")
        try fs.link("dangling", to: "dangling2")                     // the symlink itself, never its target
        XCTAssertEqual(fs.snapshot()["dangling2"], FakeFileSystem.Entry(kind: .symlink, mode: 0o777, symlinkTarget: "nowhere/at/all", links: 2))
        assertErrno(ENOENT, "missing") { try fs.link("missing", to: "x") }
        assertErrno(ENOENT, "missing, onto something") { try fs.link("missing", to: "plain") }
        assertErrno(EEXIST, "onto something") { try fs.link("sub/x", to: "plain") }
        assertErrno(EEXIST, "a directory onto something") { try fs.link("sub", to: "plain") }
        assertErrno(EPERM, "a directory") { try fs.link("sub", to: "sub2") }
        assertErrno(ENOTDIR, "through a symlink") { try fs.link("inner/x", to: "stolen") }
        assertErrno(ENOTDIR, "onto through a symlink") { try fs.link("plain", to: "inner/new") }
        try fs.remove("plain")
        XCTAssertEqual(fs.snapshot()["d/twin"]?.links, 1)
    }

    func test_remove() throws {
        standardTree()
        fs.mkdir("empty")
        assertErrno(ENOENT, "missing") { try fs.remove("missing") }
        assertErrno(ENOENT, "missing parent") { try fs.remove("missing/x") }
        assertErrno(ENOTEMPTY, "a non-empty directory") { try fs.remove("sub") }
        assertErrno(ENOTDIR, "through a symlink") { try fs.remove("inner/x") }
        assertErrno(EINVAL, "the root") { try fs.remove("") }
        try fs.remove("inner")
        try fs.remove("dangling")
        try fs.remove("empty")
        try fs.remove("plain")
        XCTAssertEqual(Set(fs.snapshot().keys), ["sub", "sub/x"], "the link went, not its target")
        try fs.removeTree("sub")
        XCTAssertEqual(fs.snapshot(), [:])
    }

    func test_setMode_setModificationTime_makeSymlink_synchronize() throws {
        standardTree()
        try fs.setMode("sub", 0o700)
        try fs.setMode("plain", 0o4755)
        XCTAssertEqual(fs.snapshot()["plain"]?.mode, 0o4755)
        assertErrno(EOPNOTSUPP, "chmod of a symlink") { try fs.setMode("inner", 0o700) }
        assertErrno(ENOENT, "chmod of nothing") { try fs.setMode("missing", 0o700) }
        assertErrno(ENOTDIR, "chmod through a symlink") { try fs.setMode("inner/x", 0o700) }
        assertErrno(EINVAL, "chmod of the root") { try fs.setMode("", 0o700) }

        try fs.setModificationTime("inner", 5_000_000_000)            // the link's own time
        XCTAssertEqual(try fs.metadata("inner")?.mtimeNs, 5_000_000_000)
        XCTAssertNotEqual(try fs.metadata("sub")?.mtimeNs, 5_000_000_000)
        assertErrno(ENOENT, "utimes of nothing") { try fs.setModificationTime("missing", 0) }
        assertErrno(ENOTDIR, "utimes through a file") { try fs.setModificationTime("plain/x", 0) }

        try fs.makeSymlink("l/m", target: "caf%E9")
        XCTAssertEqual(try fs.metadata("l/m")?.symlinkTarget, "caf%E9")
        XCTAssertEqual(try fs.metadata("l/m")?.size, 4, "a target's size is its bytes")
        assertErrno(EEXIST, "symlink onto a symlink") { try fs.makeSymlink("inner", target: "x") }
        assertErrno(EEXIST, "symlink onto a file") { try fs.makeSymlink("plain", target: "x") }
        assertErrno(ENOENT, "an empty target") { try fs.makeSymlink("e", target: "") }
        assertErrno(EINVAL, "a target that is not path text") { try fs.makeSymlink("e", target: "%zz") }
        assertErrno(ENOTDIR, "symlink through a symlink") { try fs.makeSymlink("inner/new", target: "x") }

        try fs.synchronize("")
        try fs.synchronize("sub")
        try fs.synchronize("sub/x")
        assertErrno(ELOOP, "fsync of a symlink") { try fs.synchronize("inner") }
        assertErrno(ENOENT, "fsync of nothing") { try fs.synchronize("missing") }
        assertErrno(ENOTDIR, "fsync through a symlink") { try fs.synchronize("inner/x") }
    }

    func test_readSide_refusesLikeThePOSIXOne() throws {
        standardTree()
        XCTAssertNil(try fs.metadata("inner/x"), "never through a symlink")
        XCTAssertNil(try fs.metadata("plain/x"))
        XCTAssertNil(fs.read("inner/x", offset: 0, count: 1))
        XCTAssertNil(fs.read("inner", offset: 0, count: 1))
        XCTAssertThrowsError(try fs.metadata("../x"))
        assertErrno(ELOOP, "open a symlink") { _ = try fs.openForReading("inner") }
        assertErrno(EINVAL, "open a directory") { _ = try fs.openForReading("sub") }
        assertErrno(ENOENT, "open nothing") { _ = try fs.openForReading("missing") }
        assertErrno(ENOTDIR, "open through a symlink") { _ = try fs.openForReading("inner/x") }
        assertErrno(ENOTDIR, "list a symlink") { _ = try fs.list("inner") }
        assertErrno(ENOTDIR, "list a file") { _ = try fs.list("plain") }
        assertErrno(ENOENT, "list nothing") { _ = try fs.list("missing") }
        XCTAssertEqual(try fs.list(""), ["dangling", "inner", "plain", "sub"], "sorted")
        XCTAssertEqual(try fs.metadata("sub")?.nlink, 2)
        XCTAssertEqual(try fs.metadata("")?.nlink, 3)
    }

    // MARK: durability

    func test_crash_keepsWhatWasSynchronized_revertsTheRest() throws {
        try fs.makeDirectory("d", mode: 0o755)
        try fs.synchronize("")
        try write(fs, "d/f", "v1", sync: true)
        try fs.synchronize("d")
        XCTAssertEqual(fs.durableSnapshot(), fs.snapshot())

        // Replaced without synchronizing the directory: the rename and the temporary file are lost.
        try write(fs, "d/f.tmp", "v2", sync: true)
        try fs.rename("d/f.tmp", to: "d/f", replacing: true)
        fs.crash()
        XCTAssertEqual(Set(fs.snapshot().keys), ["d", "d/f"])
        XCTAssertEqual(text("d/f"), "v1")

        // The same, done right.
        try write(fs, "d/f.tmp", "v2", sync: true)
        try fs.rename("d/f.tmp", to: "d/f", replacing: true)
        try fs.synchronize("d")
        fs.crash()
        XCTAssertEqual(Set(fs.snapshot().keys), ["d", "d/f"])
        XCTAssertEqual(text("d/f"), "v2")

        // Content written after the last synchronize reverts to what was synchronized.
        let f = try fs.createFile("d/g", mode: 0o600)
        try Array("abc".utf8).withUnsafeBytes { try f.write($0, at: 0) }
        try f.synchronize()
        try Array("xyz".utf8).withUnsafeBytes { try f.write($0, at: 3) }
        try f.setMode(0o644)
        try fs.synchronize("d")
        XCTAssertEqual(text("d/g"), "abcxyz")
        fs.crash()
        XCTAssertEqual(text("d/g"), "abc")
        XCTAssertEqual(fs.snapshot()["d/g"]?.mode, 0o600)
        assertErrno(EBADF, "a writer from before the crash") { try f.synchronize() }

        // Made and written but never synchronized, in a synchronized directory: empty, as made.
        try write(fs, "d/h", "lost", mode: 0o640)
        try fs.synchronize("d")
        fs.crash()
        XCTAssertEqual(fs.snapshot()["d/h"], FakeFileSystem.Entry(kind: .file, mode: 0o640, content: []))

        // A directory whose parent was not synchronized is lost with everything in it, synchronized or not.
        try fs.makeDirectory("d/new", mode: 0o755)
        try write(fs, "d/new/x", "x", sync: true)
        try fs.synchronize("d/new")
        fs.crash()
        XCTAssertNil(fs.snapshot()["d/new"])

        // Removals: back until the directory is synchronized.
        try fs.remove("d/f")
        fs.crash()
        XCTAssertEqual(text("d/f"), "v2")
        try fs.remove("d/f")
        try fs.synchronize("d")
        fs.crash()
        XCTAssertNil(fs.snapshot()["d/f"])

        // Metadata by path, and fsync by path.
        try fs.setMode("d/g", 0o400)
        try fs.setModificationTime("d/g", 7)
        fs.crash()
        XCTAssertEqual(fs.snapshot()["d/g"]?.mode, 0o600)
        try fs.setMode("d/g", 0o400)
        try fs.synchronize("d/g")
        fs.crash()
        XCTAssertEqual(fs.snapshot()["d/g"]?.mode, 0o400)

        // The helpers are changes like any other: durable once synchronized.
        fs.write("d/user", [1])
        fs.crash()
        XCTAssertNil(fs.snapshot()["d/user"])
        fs.write("d/user", [1])
        try fs.synchronize("")
        fs.crash()
        XCTAssertEqual(fs.snapshot()["d/user"]?.content, [1])
    }

    func test_crash_aRenameBetweenDirectories_isDurableOnlyWhereSynchronized() throws {
        try fs.makeDirectory("a", mode: 0o755)
        try fs.makeDirectory("b", mode: 0o755)
        try write(fs, "a/f", "data", sync: true)
        try fs.synchronize("")
        try fs.rename("a/f", to: "b/f", replacing: false)
        try fs.synchronize("b")
        XCTAssertEqual(Set(fs.durableSnapshot().keys), ["a", "a/f", "b", "b/f"], "the source directory still names it")
        XCTAssertEqual(fs.durableSnapshot()["b/f"]?.links, 2)
        try fs.synchronize("a")
        XCTAssertEqual(Set(fs.durableSnapshot().keys), ["a", "b", "b/f"])
        XCTAssertEqual(fs.durableSnapshot()["b/f"]?.links, 1)

        // Directories moved into each other with only one side synchronized never make a cycle or two names.
        let g = FakeFileSystem()
        try g.makeDirectory("x/y", mode: 0o755)
        try g.synchronize("")
        try g.rename("x/y", to: "y", replacing: false)
        try g.rename("x", to: "y/x", replacing: false)
        try g.synchronize("y")
        XCTAssertEqual(Set(g.snapshot().keys), ["y", "y/x"])
        g.crash()
        XCTAssertEqual(Set(g.snapshot().keys), ["x", "x/y"])
        XCTAssertEqual(try g.list("x/y"), [], "y keeps its first name, x its own")
    }

    // MARK: faults

    /// A fake with a tree, everything durable, and a writer open on "w".
    private func faultable() throws -> (FakeFileSystem, any FileWriter) {
        let g = FakeFileSystem()
        g.write("plain", Array("f".utf8))
        g.write("sub/x", Array("inside".utf8))
        g.mkdir("empty")
        g.symlink("inner", target: "sub")
        let w = try g.createFile("w", mode: 0o644)
        try [UInt8]([1, 2, 3]).withUnsafeBytes { try w.write($0, at: 0) }
        try g.synchronize("")
        return (g, w)
    }

    /// Each kind of operation, done successfully when no fault is set.
    private let everyOperation: [(FakeFileSystem.Operation.Kind, (FakeFileSystem, any FileWriter) throws -> Void)] = [
        (.makeDirectory, { g, _ in try g.makeDirectory("new/dir", mode: 0o755) }),
        (.createFile, { g, _ in _ = try g.createFile("new/file", mode: 0o644) }),
        (.rename, { g, _ in try g.rename("plain", to: "sub/x", replacing: true) }),
        (.link, { g, _ in try g.link("plain", to: "new/twin") }),
        (.remove, { g, _ in try g.remove("empty") }),
        (.setMode, { g, _ in try g.setMode("plain", 0o600) }),
        (.setModificationTime, { g, _ in try g.setModificationTime("plain", 42) }),
        (.makeSymlink, { g, _ in try g.makeSymlink("new/link", target: "plain") }),
        (.synchronize, { g, _ in try g.synchronize("sub") }),
        (.setOwner, { g, _ in try g.setOwner("plain", uid: 70, gid: 71) }),
        (.write, { _, w in try [UInt8]([9]).withUnsafeBytes { try w.write($0, at: 10) } }),
        (.truncate, { _, w in try w.truncate(1) }),
        (.setFileMode, { _, w in try w.setMode(0o600) }),
        (.setFileModificationTime, { _, w in try w.setModificationTime(42) }),
        (.synchronizeFile, { _, w in try w.synchronize() }),
    ]

    func test_everyOperationKind_isCovered() {
        XCTAssertEqual(Set(everyOperation.map(\.0)), Set(FakeFileSystem.Operation.Kind.allCases))
    }

    func test_aFailedOperation_throwsItsErrno_andChangesNothing() throws {
        let codes = [EACCES, ENOSPC, EEXIST, EIO, EDQUOT, EROFS]
        for (i, (kind, op)) in everyOperation.enumerated() {
            let (g, w) = try faultable()
            let code = codes[i % codes.count]
            var seen: [FakeFileSystem.Operation] = []
            g.fault = { $0.kind == kind ? .fail(code) : nil }
            g.beforeOperation = { seen.append($0) }
            let live = g.snapshot(), durable = g.durableSnapshot(), count = g.operationCount
            assertErrno(code, "\(kind)") { try op(g, w) }
            XCTAssertEqual(g.snapshot(), live, "\(kind) changed the tree")
            XCTAssertEqual(g.durableSnapshot(), durable, "\(kind) changed what is durable")
            XCTAssertEqual(g.operationCount, count + 1)
            XCTAssertEqual(seen.map(\.kind), [kind])
            XCTAssertFalse(g.crashed)
            g.fault = nil
            assertErrno(nil, "\(kind) without the fault") { try op(g, w) }
        }
    }

    func test_crashBefore_changesNothing_crashAfter_doesTheOperation_thenEverythingFailsUntilRestart() throws {
        for (kind, op) in everyOperation {
            for action in [FakeFileSystem.FaultAction.crashBefore, .crashAfter] {
                let (g, w) = try faultable()
                try [UInt8]([4]).withUnsafeBytes { try w.write($0, at: 3) }   // not synchronized: lost in the crash
                g.fault = { $0.kind == kind ? action : nil }
                let live = g.snapshot(), durable = g.durableSnapshot()
                let thrown = Self.code { try op(g, w) }
                XCTAssertTrue(g.crashed, "\(kind) \(action)")
                if action == .crashBefore {
                    XCTAssertEqual(thrown, EIO)
                    XCTAssertEqual(g.snapshot(), live, "\(kind): crashed before, changed nothing")
                } else {
                    XCTAssertNil(thrown, "\(kind): the operation itself completed")
                    let changed = g.snapshot() != live || g.durableSnapshot() != durable
                    let invisible: Set<FakeFileSystem.Operation.Kind> = [.synchronize, .setModificationTime, .setFileModificationTime, .setOwner]
                    XCTAssertTrue(changed || invisible.contains(kind), "\(kind) happened")   // snapshots hold no times or owners
                }
                g.fault = nil
                let count = g.operationCount
                assertErrno(EIO, "\(kind): later operations") { try g.makeDirectory("later", mode: 0o755) }
                assertErrno(EIO, "\(kind): later writer operations") { try w.synchronize() }
                assertErrno(EIO, "\(kind): later reads") { _ = try g.metadata("plain") }
                assertErrno(EIO, "\(kind): later listing") { _ = try g.list("") }
                XCTAssertNil(g.read("plain", offset: 0, count: 1))
                XCTAssertEqual(g.operationCount, count, "refused while crashed, not counted")
                g.restart()
                XCTAssertFalse(g.crashed)
                XCTAssertEqual(g.snapshot(), g.durableSnapshot())
                if action == .crashBefore { XCTAssertEqual(g.snapshot(), durable, "\(kind)") }
                let synchronized = kind == .synchronizeFile && action == .crashAfter
                XCTAssertEqual(g.snapshot()["w"]?.content, synchronized ? [1, 2, 3, 4] : [1, 2, 3], "\(kind): unsynchronized writes are gone")
                assertErrno(EBADF, "\(kind): a writer from before the restart") { try w.synchronize() }
                assertErrno(nil, "\(kind): working again") { try g.makeDirectory("later", mode: 0o755) }
            }
        }
    }

    func test_crashAfter_aSynchronize_keepsWhatItSynchronized() throws {
        let (g, w) = try faultable()
        try [UInt8]([7]).withUnsafeBytes { try w.write($0, at: 0) }
        g.fault = { $0.kind == .synchronizeFile ? .crashAfter : nil }
        try w.synchronize()
        g.restart()
        XCTAssertEqual(g.snapshot()["w"]?.content, [7, 2, 3])
    }

    /// A simulator's faults: a deterministic function of the seed and the operation replays.
    func test_seededFaults_replay() throws {
        func run(seed: UInt64) throws -> ([String: FakeFileSystem.Entry], [Int32?]) {
            let g = FakeFileSystem()
            g.fault = { op in
                var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ seed
                for b in op.description.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
                return h % 4 == 0 ? .fail([ENOSPC, EACCES, EIO][Int(h / 4 % 3)]) : nil
            }
            var rng = SplitMix(seed: seed)
            var results: [Int32?] = []
            for i in 0..<200 {
                let p = ["a", "b", "a/c", "b/d"][Int(rng.next() % 4)] + "\(i % 7)"
                switch rng.next() % 4 {
                case 0: results.append(Self.code { try g.makeDirectory(p, mode: 0o755) })
                case 1: results.append(Self.code { try self.write(g, p, "x\(i)") })
                case 2: results.append(Self.code { try g.rename(p, to: p + "r", replacing: rng.next() % 2 == 0) })
                default: results.append(Self.code { try g.remove(p) })
                }
            }
            return (g.snapshot(), results)
        }
        let first = try run(seed: 7), again = try run(seed: 7)
        XCTAssertEqual(first.0, again.0)
        XCTAssertEqual(first.1, again.1)
        XCTAssertTrue(first.1.contains(ENOSPC) && first.1.contains(nil))
    }

    // MARK: beforeOperation

    func test_beforeOperation_changesTheTreeUnderneath() throws {
        standardTree()
        fs.beforeOperation = { [fs] op in
            guard let fs else { return }
            switch op {
            case .createFile(let p, _): fs.write(p, Array("theirs".utf8))     // someone made it first
            case .rename(let from, _, _): fs.delete(RelativePath.parent(of: from))
            case .remove(let p): fs.rename(p, p + ".moved")
            default: break
            }
        }
        assertErrno(EEXIST, "created underneath") { _ = try fs.createFile("new", mode: 0o644) }
        XCTAssertEqual(text("new"), "theirs")
        assertErrno(ENOENT, "its directory deleted underneath") { try fs.rename("sub/x", to: "y", replacing: true) }
        assertErrno(ENOENT, "moved away underneath") { try fs.remove("plain") }
        XCTAssertNotNil(fs.snapshot()["plain.moved"])
        XCTAssertEqual(fs.operationCount, 3)

        var seen: [FakeFileSystem.Operation] = []
        fs.beforeOperation = { seen.append($0) }
        try fs.makeDirectory("m", mode: 0o700)
        let f = try fs.createFile("m/f", mode: 0o644)
        try [UInt8]([1, 2]).withUnsafeBytes { try f.write($0, at: 5) }
        try f.synchronize()
        try fs.link("m/f", to: "m/g")
        try fs.rename("m/g", to: "m/h", replacing: false)
        XCTAssertEqual(seen, [.makeDirectory("m", mode: 0o700), .createFile("m/f", mode: 0o644), .write("m/f", offset: 5, count: 2),
                              .synchronizeFile("m/f"), .link("m/f", to: "m/g"),
                              .rename("m/g", to: "m/h", replacing: false)])
        XCTAssertEqual(seen.last?.paths, ["m/g", "m/h"])
        XCTAssertEqual(seen.last?.description, "rename m/g -> m/h")
        XCTAssertEqual(fs.operationCount, 9)
    }
}

/// The same operations on `POSIXFileSystem` (in a temporary directory) and on the fake give the
/// same errnos and the same trees.
final class FakeFileSystemConformanceTests: XCTestCase {
    private var base = ""
    private var savedUmask: mode_t = 0

    override func setUp() {
        base = NSTemporaryDirectory() + "syncd-fakeconf-\(UUID().uuidString.prefix(8))"
        savedUmask = umask(0o022)   // the fake's default
    }

    override func tearDown() {
        _ = umask(savedUmask)
        try? FileManager.default.removeItem(atPath: base)
    }

    private func freshRoot(_ name: String) throws -> POSIXFileSystem {
        let root = base + "/" + name
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        return POSIXFileSystem(root: root)
    }

    /// Every path below the root → its entry, through the `FileSystem` API (so for either one).
    /// A directory's link count is left out (it is 1 on btrfs).
    static func tree(_ fs: any FileSystem) throws -> [String: FakeFileSystem.Entry] {
        var out: [String: FakeFileSystem.Entry] = [:]
        func walk(_ dir: String) throws {
            for name in try fs.list(dir) {
                let p = RelativePath.join(dir, name)
                guard let m = try fs.metadata(p) else { continue }
                out[p] = FakeFileSystem.Entry(kind: m.kind, mode: m.mode, content: m.kind == .file ? try fs.readSmallFile(p) : nil,
                                              symlinkTarget: m.symlinkTarget, links: m.kind == .directory ? 0 : m.nlink)
                if m.kind == .directory { try walk(p) }
            }
        }
        try walk("")
        return out
    }

    /// Runs `script` on both and compares each step's outcome and the trees after; returns the
    /// outcomes on the disk.
    @discardableResult
    private func assertSame(_ name: String, file: StaticString = #filePath, line: UInt = #line,
                            _ script: (any WritableFileSystem) -> [(String, String)]) throws -> [String] {
        let real = try freshRoot(name), fake = FakeFileSystem()
        let onReal = script(real), onFake = script(fake)
        XCTAssertEqual(onReal.count, onFake.count, file: file, line: line)
        for (r, f) in zip(onReal, onFake) where r != f {
            XCTAssertEqual(f.1, r.1, "\(name): \(r.0): the fake differs from the disk", file: file, line: line)
        }
        let realTree = try Self.tree(real), fakeTree = try Self.tree(fake)
        XCTAssertEqual(Set(fakeTree.keys), Set(realTree.keys), name, file: file, line: line)
        for (path, entry) in realTree where fakeTree[path] != entry {
            XCTAssertEqual(fakeTree[path], entry, "\(name): \(path)", file: file, line: line)
        }
        return onReal.map(\.1)
    }

    /// "ok", "ok <value>" or the errno's name of a step.
    static func outcome<T>(_ body: () throws -> T) -> String {
        do {
            let v = try body()
            if let w = v as? any FileWriter { w.close(); return "ok" }
            if let r = v as? any FileReader { r.close(); return "ok" }
            return "ok \(v)"
        } catch let e as FileSystemError {
            return "errno \(e.errno) (\(String(cString: strerror(e.errno))))"
        } catch {
            return "\(error)"
        }
    }

    func test_scriptedOperations_sameErrnosAndTrees() throws {
        try assertSame("scripted") { fs in
            var log: [(String, String)] = []
            func step<T>(_ what: String, _ body: () throws -> T) { log.append((what, Self.outcome(body))) }
            func put(_ p: String, _ text: String, mode: UInt32 = 0o644) throws {
                let f = try fs.createFile(p, mode: mode)
                try Array(text.utf8).withUnsafeBytes { try f.write($0, at: 0) }
                f.close()
            }
            // The tree ConfinementTests uses: links out, in, up, dangling; a file where a directory should be.
            step("setup") {
                try fs.makeDirectory("sub/deeper", mode: 0o755)
                try put("sub/x", "inside")
                try put("plain", "f")
                try fs.makeSymlink("out", target: "../outside")
                try fs.makeSymlink("abs", target: "/tmp")
                try fs.makeSymlink("inner", target: "sub")
                try fs.makeSymlink("sub/up", target: "../..")
                try fs.makeSymlink("dangling", target: "nowhere/at/all")
            }
            for dir in ["out", "abs", "inner", "sub/up", "dangling", "plain", "sub/up/folder/sub", "missing"] {
                let p = dir + "/x", q = dir + "/new"
                step("mkdir \(q)") { try fs.makeDirectory(q, mode: 0o755) }
                step("create \(q)") { try fs.createFile(q, mode: 0o644) }
                step("rename from \(p)") { try fs.rename(p, to: "stolen", replacing: true) }
                step("rename onto \(p)") { try fs.rename("plain", to: p, replacing: true) }
                step("link from \(p)") { try fs.link(p, to: "stolen") }
                step("link onto \(q)") { try fs.link("plain", to: q) }
                step("remove \(p)") { try fs.remove(p) }
                step("chmod \(p)") { try fs.setMode(p, 0o777) }
                step("utimes \(p)") { try fs.setModificationTime(p, 0) }
                step("symlink \(q)") { try fs.makeSymlink(q, target: "x") }
                step("fsync \(p)") { try fs.synchronize(p) }
                step("open \(p)") { _ = try fs.openForReading(p) }
                step("list \(dir)") { try fs.list(dir).sorted() }
                step("lstat \(p)") { try fs.metadata(p)?.kind }
                step("read \(p)") { fs.read(p, offset: 0, count: 1) }
            }
            step("plain back") { try fs.rename("missing/x", to: "plain", replacing: false) }
            for bad in ["../x", "sub/../../x", "./sub/x", "sub//x", "/etc/passwd", "", "sub/x/", "a\u{0}b"] {
                step("malformed chmod \(bad)") { try fs.setMode(bad, 0o777) }
                step("malformed mkdir \(bad)") { try fs.makeDirectory(bad, mode: 0o777) }
                step("malformed lstat \(bad)") { try fs.metadata(bad)?.kind }
            }
            let long = String(repeating: "n", count: 256)
            step("long mkdir") { try fs.makeDirectory(long, mode: 0o755) }
            step("long parent") { try fs.makeDirectory(long + "/x", mode: 0o755) }
            step("long lstat") { try fs.metadata(long)?.kind }
            step("long rename") { try fs.rename("plain", to: long, replacing: true) }
            // Final symlinks are acted on themselves.
            step("chmod link") { try fs.setMode("abs", 0o700) }
            step("open link") { try fs.openForReading("abs") }
            step("open dir") { try fs.openForReading("sub") }
            step("create onto link") { try fs.createFile("abs", mode: 0o644) }
            step("mkdir onto dangling") { try fs.makeDirectory("dangling", mode: 0o755) }
            step("utimes link") { try fs.setModificationTime("abs", 1_000_000_000) }
            step("fsync link") { try fs.synchronize("abs") }
            step("fsync dir") { try fs.synchronize("sub") }
            step("fsync root") { try fs.synchronize("") }
            step("empty target") { try fs.makeSymlink("e", target: "") }
            step("list file") { try fs.list("plain") }
            step("list missing") { try fs.list("missing") }
            step("list sub") { try fs.list("sub").sorted() }
            step("read") { fs.read("sub/x", offset: 2, count: 4).map { String(decoding: $0, as: UTF8.self) } }
            step("read past") { fs.read("sub/x", offset: 3, count: 4) }
            step("read nothing past") { fs.read("sub/x", offset: 30, count: 0) }
            // rename(2)'s rules.
            step("mkdirs") {
                try fs.makeDirectory("empty", mode: 0o700)
                try fs.makeDirectory("full/inner", mode: 0o750)
                try put("full/f", "full", mode: 0o600)
                try fs.link("plain", to: "twin")
            }
            step("missing source") { try fs.rename("nope", to: "x", replacing: true) }
            step("missing source, target made") { try fs.rename("nope", to: "made/x", replacing: true) }
            step("noreplace") { try fs.rename("sub/x", to: "plain", replacing: false) }
            step("noreplace self") { try fs.rename("plain", to: "plain", replacing: false) }
            step("into itself") { try fs.rename("full", to: "full/inner/deeper/x", replacing: true) }
            step("into itself, noreplace existing") { try fs.rename("full", to: "full/inner", replacing: false) }
            step("onto ancestor") { try fs.rename("full/f", to: "full", replacing: true) }
            step("dir onto file") { try fs.rename("empty", to: "plain", replacing: true) }
            step("dir onto link") { try fs.rename("empty", to: "abs", replacing: true) }
            step("file onto dir") { try fs.rename("plain", to: "empty", replacing: true) }
            step("link onto dir") { try fs.rename("abs", to: "empty", replacing: true) }
            step("dir onto non-empty dir") { try fs.rename("empty", to: "full", replacing: true) }
            step("self") { try fs.rename("full", to: "full", replacing: true) }
            step("hard link sibling") { try fs.rename("plain", to: "twin", replacing: true) }
            step("dir onto empty dir") { try fs.rename("full/inner", to: "empty", replacing: true) }
            step("file onto link") { try fs.rename("twin", to: "out", replacing: true) }
            step("link elsewhere") { try fs.rename("dangling", to: "new/place", replacing: false) }
            // link, remove, chmod, symlinks.
            step("link dir") { try fs.link("sub", to: "sub2") }
            step("link dir onto something") { try fs.link("sub", to: "plain") }
            step("link missing onto something") { try fs.link("nope", to: "plain") }
            step("link a symlink") { try fs.link("inner", to: "inner2") }
            step("link a file far away") { try fs.link("plain", to: "a/b/c") }
            step("remove non-empty") { try fs.remove("full") }
            step("remove missing") { try fs.remove("nope") }
            step("remove link") { try fs.remove("abs") }
            step("remove empty dir") { try fs.remove("sub/deeper") }
            step("chmod bits") { try fs.setMode("sub/x", 0o1750) }
            step("chmod dir") { try fs.setMode("sub", 0o700) }
            step("symlink bytes") { try fs.makeSymlink("s/latin1", target: "caf%E9/%25") }
            step("symlink onto file") { try fs.makeSymlink("plain", target: "x") }
            step("create made parents") { try fs.createFile("p/q/r", mode: 0o777) }
            step("mkdir mode") { try fs.makeDirectory("m", mode: 0o1777) }
            step("removeTree") { try fs.removeTree("sub/up") }
            return log
        }
    }

    /// Random operations on random paths made of the names present (ConfinementTests' walk), on
    /// both: the same outcome at every step and the same tree at the end.
    func test_randomOperations_sameErrnosAndTrees() throws {
        var outcomes: Set<String> = []
        for seed in UInt64(1)...30 {
            outcomes.formUnion(try assertSame("seed \(seed)") { fs in
                var rng = SplitMix(seed: seed)
                let targets = ["../outside", "/tmp", "..", "../..", "a", "a/b", "nowhere", "/", "."]
                var names = ["a", "b", "c", "a/b", "a/b/c", "b/a", "c/c"]
                func anyPath() -> String { names[Int(rng.next() % UInt64(names.count))] + (rng.next() % 3 == 0 ? "/x" : "") }
                var log: [(String, String)] = []
                for i in 0..<250 {
                    let p = anyPath(), q = anyPath()
                    let what: String, result: String
                    switch rng.next() % 13 {
                    case 0: what = "mkdir \(p)"; result = Self.outcome { try fs.makeDirectory(p, mode: 0o755) }
                    case 1:
                        what = "create \(p)"
                        result = Self.outcome {
                            let f = try fs.createFile(p, mode: 0o644)
                            try [UInt8]("data \(i)".utf8).withUnsafeBytes { try f.write($0, at: Int64(i % 3)) }
                            if i % 4 == 0 { try f.truncate(2) }
                            if i % 5 == 0 { try f.setMode(0o600) }
                            f.close()
                        }
                    case 2:
                        let t = targets[Int(rng.next() % UInt64(targets.count))]
                        what = "symlink \(p) -> \(t)"; result = Self.outcome { try fs.makeSymlink(p, target: t) }
                    case 3:
                        let replacing = rng.next() % 2 == 0
                        what = "rename \(p) \(q) \(replacing)"; result = Self.outcome { try fs.rename(p, to: q, replacing: replacing) }
                    case 4: what = "link \(p) \(q)"; result = Self.outcome { try fs.link(p, to: q) }
                    case 5: what = "remove \(p)"; result = Self.outcome { try fs.remove(p) }
                    case 6: what = "chmod \(p)"; result = Self.outcome { try fs.setMode(p, 0o700) }
                    case 7: what = "utimes \(p)"; result = Self.outcome { try fs.setModificationTime(p, 42) }
                    case 8: what = "removeTree \(p)"; result = Self.outcome { try fs.removeTree(p) }
                    case 9: what = "read \(p)"; result = Self.outcome { fs.read(p, offset: 1, count: 3) }
                    case 10: what = "lstat \(p)"; result = Self.outcome { try fs.metadata(p).map { "\($0.kind) \($0.size) \($0.mode)" } }
                    case 11: what = "list \(p)"; result = Self.outcome { try fs.list(p).sorted() }
                    default: what = "fsync \(p)"; result = Self.outcome { try fs.synchronize(p) }
                    }
                    log.append(("\(i): \(what)", result))
                    if rng.next() % 5 == 0 { names.append(q + "/" + ["a", "b", "x"][Int(rng.next() % 3)]) }
                }
                return log
            })
        }
        // The walk reaches every rule, not just the easy ones.
        for code in [ENOENT, ENOTDIR, EEXIST, EINVAL, ENOTEMPTY, EISDIR, EPERM, ELOOP, EOPNOTSUPP] {
            XCTAssertTrue(outcomes.contains { $0.hasPrefix("errno \(code) ") }, "no step gave errno \(code)")
        }
    }
}
