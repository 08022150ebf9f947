import Foundation
import XCTest

/// `syncd bench disk` and `syncd bench hash`, run as users run them, their JSON read back.
final class BenchCommandTests: XCTestCase {
    private func run(_ arguments: [String]) throws -> DaemonHarness.Result {
        let h = try DaemonHarness(name: "bench")
        return try h.cli(arguments)
    }

    private func object(_ text: String) throws -> [String: Any] {
        let line = try XCTUnwrap(text.split(separator: "\n").first, "no output")
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], text)
    }

    func test_benchDisk_writesDurablyInTheGivenDirectory_reportsSaneFigures_andLeavesNothingBehind() throws {
        let dir = NSTemporaryDirectory() + "syncd-bench-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try run(["bench", "disk", dir, "--size", "8", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let report = try object(r.stdout)
        XCTAssertEqual(report["bench"] as? String, "disk")
        XCTAssertEqual(report["path"] as? String, dir)
        XCTAssertEqual(report["bytes"] as? Int, 8 << 20)
        let seconds = try XCTUnwrap(report["seconds"] as? Double), rate = try XCTUnwrap(report["mbPerSecond"] as? Double)
        XCTAssertGreaterThan(seconds, 0)
        let expected: Double = Double(8 * 1_048_576) / 1e6 / seconds
        XCTAssertEqual(rate, expected, accuracy: rate * 1e-6, "MB/s is bytes / 10^6 / seconds")
        let fsync = try XCTUnwrap(report["fsyncMilliseconds"] as? Double)
        XCTAssertTrue(fsync > 0 && fsync < 10_000, "fsync latency \(fsync) ms")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [], "the scratch file is removed")

        let text = try run(["bench", "disk", dir, "--size", "1"])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("1 MiB written and fsynced") && text.stdout.contains("MB/s"), text.stdout)

        let missing = try run(["bench", "disk", dir + "/nowhere", "--size", "1", "--json"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("\(dir)/nowhere: No such file or directory"), missing.stderr)
    }

    func test_benchHash_chunksAndHashesWithTheRealChunker_reportsGBPerSecondAndChunkSizes() throws {
        let r = try run(["bench", "hash", "--size", "16", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let report = try object(r.stdout)
        XCTAssertEqual(report["bench"] as? String, "hash")
        XCTAssertEqual(report["bytes"] as? Int, 16 << 20)
        let chunks = try XCTUnwrap(report["chunks"] as? Int), average = try XCTUnwrap(report["averageChunkBytes"] as? Int)
        XCTAssertEqual(average, (16 << 20) / chunks)
        let plausible: ClosedRange<Int> = 16_384...262_144
        XCTAssertTrue(plausible.contains(average), "FastCDC's chunks average 64 KiB, between 16 and 256 KiB: \(average)")
        for key in ["chunkGBPerSecond", "chunkAndIDGBPerSecond"] {
            let rate = try XCTUnwrap(report[key] as? Double, key)
            XCTAssertTrue(rate > 0.001 && rate < 1000, "\(key) \(rate)")
        }
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(report["cores"] as? Int), 1)
    }
}
