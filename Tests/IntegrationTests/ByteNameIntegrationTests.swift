import Foundation
import XCTest

/// Names are bytes: real daemons sync names that differ only by Unicode normalization, and names
/// that are not UTF-8, byte for byte. Files are made and listed with raw system calls, because
/// FileManager's String API cannot spell a name that is not UTF-8.
extension ReplicationIntegrationTests {
    private static let nfc = Array("caf\u{E9}".utf8)        // é precomposed: 63 61 66 C3 A9
    private static let nfd = Array("cafe\u{301}".utf8)      // e + combining acute: 63 61 66 65 CC 81
    private static let latin1Dir = Array("d".utf8) + [0xE9]  // "dé" in Latin-1, not UTF-8
    private static let latin1File = Array("caf".utf8) + [0xE9]

    func test_namesAreBytes_normalizationTwinsAndLatin1Names_reachThePeerExactly() throws {
        let (d, _) = try cluster(2, name: "bytes")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        let slash = [UInt8(ascii: "/")]
        try Self.write(a, Self.nfc, "nfc")
        try Self.write(a, Self.nfd, "nfd")
        XCTAssertEqual(mkdir(Self.system(a, Self.latin1Dir), 0o755), 0)
        try Self.write(a, Self.latin1Dir + slash + Self.latin1File, "latin-1")
        XCTAssertEqual(symlink(Self.cString(Self.latin1Dir + slash + Self.nfd), Self.system(a, Array("link".utf8) + [0xFF])), 0)
        let expected: [[UInt8]: String] = [
            Self.nfc: "file nfc",
            Self.nfd: "file nfd",
            Self.latin1Dir: "dir",
            Self.latin1Dir + slash + Self.latin1File: "file latin-1",
            Array("link".utf8) + [0xFF]: "link " + Self.hex(Self.latin1Dir + slash + Self.nfd),
        ]
        XCTAssertEqual(Self.byteTree(a), expected, "the test made what it meant to")
        try waitInSync(d[0])
        XCTAssertEqual(Self.byteTree(b), expected, "B holds exactly these names, bytes and contents\nA: \(d[0].daemonLog.suffix(3000))\nB: \(d[1].daemonLog.suffix(3000))")

        // A rename of one twin leaves the other alone.
        XCTAssertEqual(rename(Self.system(a, Self.nfd), Self.system(a, Self.nfd + Array(".old".utf8))), 0)
        try waitInSync(d[0])
        var renamed = expected
        renamed[Self.nfd + Array(".old".utf8)] = renamed.removeValue(forKey: Self.nfd)
        XCTAssertEqual(Self.byteTree(b), renamed)
    }

    /// `root` + "/" + `relative` (raw bytes), NUL-terminated; `root` alone when `relative` is empty.
    private static func system(_ root: String, _ relative: [UInt8]) -> [CChar] {
        cString(relative.isEmpty ? Array(root.utf8) : Array(root.utf8) + [UInt8(ascii: "/")] + relative)
    }

    private static func cString(_ bytes: [UInt8]) -> [CChar] { (bytes + [0]).map { CChar(bitPattern: $0) } }

    private static func write(_ root: String, _ relative: [UInt8], _ content: String) throws {
        let fd = open(system(root, relative), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        XCTAssertEqual(Glibc.write(fd, content, content.utf8.count), content.utf8.count)
    }

    private static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    /// Raw relative name → "dir", "file <content>" or "link <target bytes in hex>", everything
    /// outside `.syncd/`, found with opendir/readdir so no name is decoded or repaired.
    private static func byteTree(_ root: String) -> [[UInt8]: String] {
        var out: [[UInt8]: String] = [:]
        var stack: [[UInt8]] = [[]]
        while let dir = stack.popLast() {
            guard let dp = opendir(system(root, dir)) else { continue }
            defer { closedir(dp) }
            while let ent = readdir(dp) {
                let name = withUnsafePointer(to: ent.pointee.d_name) {
                    $0.withMemoryRebound(to: UInt8.self, capacity: 256) { Array(UnsafeBufferPointer(start: $0, count: strlen(UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)))) }
                }
                if name == Array(".".utf8) || name == Array("..".utf8) || (dir.isEmpty && name == Array(".syncd".utf8)) { continue }
                let rel = dir.isEmpty ? name : dir + [UInt8(ascii: "/")] + name
                var st = stat()
                guard lstat(system(root, rel), &st) == 0 else { continue }
                switch st.st_mode & S_IFMT {
                case S_IFDIR:
                    out[rel] = "dir"
                    stack.append(rel)
                case S_IFLNK:
                    var buf = [CChar](repeating: 0, count: 4096)
                    let n = readlink(system(root, rel), &buf, buf.count)
                    out[rel] = "link " + hex(buf.prefix(max(n, 0)).map { UInt8(bitPattern: $0) })
                default:
                    let fd = open(system(root, rel), O_RDONLY | O_CLOEXEC)
                    var content = [UInt8](repeating: 0, count: 4096)
                    let n = fd >= 0 ? read(fd, &content, content.count) : -1
                    if fd >= 0 { close(fd) }
                    out[rel] = "file " + String(decoding: content.prefix(max(n, 0)), as: UTF8.self)
                }
            }
        }
        return out
    }
}
