import Foundation
import XCTest

/// Per-chunk deflate between two real daemons (Protocol/wire.md, "Compression"): a compressible
/// file crosses in a fraction of its size when both offer it, and whole when one side turned it off.
final class CompressionIntegrationTests: XCTestCase, ClusterTesting {
    /// Two daemons sharing a new folder; `extra[i]` are daemon i's own options.
    /// The sender deflates whenever it pays (`SYNCD_COMPRESSION_BACKLOG=0`): on loopback nothing
    /// waits for the socket, so by default it would send as it is.
    func pair(_ name: String, extra: [[String]], always: Bool = true) throws -> [DaemonHarness] {
        let a = try DaemonHarness(name: "\(name)0"), b = try DaemonHarness(name: "\(name)1")
        try a.startDaemon(extra: extra[0], environment: always ? ["SYNCD_COMPRESSION_BACKLOG": "0"] : [:])
        let seed = try XCTUnwrap(a.status().listen)
        let add = try a.cli(["add", a.root + "/data", "--secret"])
        XCTAssertEqual(add.status, 0, add.stderr)
        let secret = String(add.stdout.split(whereSeparator: \.isWhitespace).last ?? "")
        try b.startDaemon(extra: ["--join", seed] + extra[1])
        let r = try b.cli(["add", b.root + "/data", "--secret", secret])
        XCTAssertEqual(r.status, 0, r.stderr)
        return [a, b]
    }

    /// 6 MiB of log lines, distinct enough that no chunk repeats.
    func logText() -> Data {
        var out = ""
        var n = 0
        while out.utf8.count < 6 << 20 {
            out += "2026-05-01T12:\(n / 3600 % 60):\(n / 60 % 60).\(n % 1000)Z INFO http request_id=\(n &* 2_654_435_761 % 1_000_000_007) "
                + "method=GET path=/api/v1/items/\(n % 4099) status=\(n % 17 == 0 ? 404 : 200) bytes=\(n % 9973) ms=\(n % 211)\n"
            n += 1
        }
        return Data(out.utf8)
    }

    /// What the folder's status says crossed the wire toward this daemon.
    func bytesIn(_ h: DaemonHarness) throws -> Int64 {
        let json = try JSONSerialization.jsonObject(with: Data(try h.cli(["status", "--json"]).stdout.utf8)) as? [String: Any]
        let folder = try XCTUnwrap((json?["folders"] as? [[String: Any]])?.first)
        return try XCTUnwrap(folder["bytesIn"] as? NSNumber).int64Value
    }

    func test_aCompressibleFile_crossesDeflated_whenBothOfferIt() throws {
        let d = try pair("deflate", extra: [[], []])
        let text = logText()
        try text.write(to: URL(fileURLWithPath: d[0].root + "/data/app.log"))
        try waitInSync(d[0])
        XCTAssertEqual(FileManager.default.contents(atPath: d[1].root + "/data/app.log"), text)
        let received = try bytesIn(d[1])
        XCTAssertLessThan(received, Int64(text.count) * 4 / 10, "log text crosses in under 40 % of its size: \(received) of \(text.count)")
    }

    /// By default a chunk is deflated only while the link is what holds the transfer back; on
    /// loopback the socket keeps up, so (almost) everything goes as it is, and arrives whole.
    func test_byDefault_onAFastLink_chunksGoAsTheyAre() throws {
        let d = try pair("auto", extra: [[], []], always: false)
        let text = logText()
        try text.write(to: URL(fileURLWithPath: d[0].root + "/data/app.log"))
        try waitInSync(d[0])
        XCTAssertEqual(FileManager.default.contents(atPath: d[1].root + "/data/app.log"), text)
        let received = try bytesIn(d[1])
        XCTAssertGreaterThan(received, Int64(text.count) / 2, "a link that keeps up gets chunks mostly as they are: \(received) of \(text.count)")
    }

    func test_compressionOffOnOneSide_theFileStillSyncs_uncompressed() throws {
        let d = try pair("plain", extra: [[], ["--no-compression"]])
        let text = logText()
        try text.write(to: URL(fileURLWithPath: d[0].root + "/data/app.log"))
        try waitInSync(d[0])
        XCTAssertEqual(FileManager.default.contents(atPath: d[1].root + "/data/app.log"), text)
        let received = try bytesIn(d[1])
        XCTAssertGreaterThanOrEqual(received, Int64(text.count), "nothing was deflated: \(received) of \(text.count)")
    }
}
