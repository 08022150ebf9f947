import Foundation
import XCTest

/// Per-chunk deflate between two real daemons (Protocol/wire.md, "Compression"): a compressible
/// file crosses in a fraction of its size when both offer it, and whole when one side turned it off.
final class CompressionIntegrationTests: XCTestCase, ClusterTesting {
    /// Two daemons sharing a new folder; `extra[i]` are daemon i's own options.
    func pair(_ name: String, extra: [[String]]) throws -> [DaemonHarness] {
        let a = try DaemonHarness(name: "\(name)0"), b = try DaemonHarness(name: "\(name)1")
        try a.startDaemon(extra: extra[0])
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
