import Foundation
import XCTest

/// Swarm (Protocol/wire.md, "Swarm"): receivers of the same new data announce what they received
/// (`have`) and serve it from their staged files, so they take from each other and not all from
/// the writer. The throughput side is Benchmarks/swarm_bench.py; this checks that it happens.
extension ReplicationIntegrationTests {
    func test_receiversOfTheSameNewData_serveEachOther_andTheWriterUploadsLessThanOncePerReceiver() throws {
        let (d, _) = try cluster(4, name: "swarm")
        for h in d { _ = try h.waitForFolder(timeout: 20, "connected to every peer") { $0.peers?.filter(\.connected).count == 3 } }
        let size = 32 << 20
        let content = noise(size, seed: 11)
        let before = try d.map { try traffic($0).bytesOut }
        try drop(content, as: "new.bin", into: d[0])
        for h in d.dropFirst() {
            XCTAssertTrue(poll(60) { FileManager.default.contents(atPath: h.root + "/data/new.bin") == content }, "\(h.root) has the file")
        }
        let sent = try zip(d.map { try traffic($0).bytesOut }, before).map { $0 - $1 }
        let receivers = sent.dropFirst().reduce(0, +)
        print("swarm: writer sent \(sent[0]) bytes, receivers \(Array(sent.dropFirst())) for \(size) bytes to each of 3")
        XCTAssertGreaterThan(receivers, Int64(size / 8), "receivers served each other: \(sent)")
        XCTAssertLessThan(sent[0], Int64(3 * size) * 9 / 10, "the writer uploaded less than once per receiver: \(sent)")
    }
}
