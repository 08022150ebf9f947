import Foundation
import XCTest

/// The HTTP endpoint (`--http`) of real daemons, asked by a real HTTP client: curl (the event
/// stream read as it arrives).
final class HTTPIntegrationTests: XCTestCase {
    struct Reply {
        var status: Int
        var headers: [String: String]
        var body: String
    }

    /// GET `url` with `headers`, through curl (URLSession on Linux stalls on a 401 that asks for
    /// basic authentication); fails the test on a transport error.
    func get(_ url: String, headers: [String: String] = [:], file: StaticString = #filePath, line: UInt = #line) throws -> Reply {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        p.arguments = ["-s", "-i", "-m", "10"] + headers.flatMap { ["-H", "\($0.key): \($0.value)"] } + [url]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, "GET \(url) answered", file: file, line: line)
        let text = String(decoding: data, as: UTF8.self)
        let parts = text.components(separatedBy: "\r\n\r\n")
        let head = parts[0].components(separatedBy: "\r\n")
        var headers: [String: String] = [:]
        for h in head.dropFirst() {
            guard let colon = h.firstIndex(of: ":") else { continue }
            headers[h[..<colon].lowercased()] = h[h.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let status = Int(head[0].split(separator: " ").dropFirst().first ?? "") ?? 0
        return Reply(status: status, headers: headers, body: parts.dropFirst().joined(separator: "\r\n\r\n"))
    }


    /// Two daemons sharing `data`; the first serves HTTP (`http` options added to its command line).
    func pair(_ name: String, http: [String] = ["--http", "127.0.0.1:0"], second: [String] = []) throws -> (DaemonHarness, DaemonHarness, String?) {
        let a = try DaemonHarness(name: name + "a")
        try a.startDaemon(extra: http)
        let add = try a.cli(["add", a.root + "/data", "--secret"])
        XCTAssertEqual(add.status, 0, add.stderr)
        let secret = String(add.stdout.split(whereSeparator: \.isWhitespace).last ?? "")
        let b = try DaemonHarness(name: name + "b")
        try b.startDaemon(extra: ["--join", try XCTUnwrap(a.status().listen)] + second)
        let r = try b.cli(["add", b.root + "/data", "--secret", secret])
        XCTAssertEqual(r.status, 0, r.stderr)
        return (a, b, try a.status().http.map { "http://" + $0 })
    }

    func waitInSync(_ h: DaemonHarness, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try h.cli(["wait", h.root + "/data", "--timeout", "30"])
        XCTAssertEqual(r.status, 0, "wait: \(r.stderr)\n\(h.daemonLog.suffix(2000))", file: file, line: line)
    }

    func test_endpoints_healthReadinessStatusMetricsAndPage_describeTheSyncedFolder() throws {
        let a = try DaemonHarness(name: "httpa")
        try a.startDaemon(extra: ["--http", "127.0.0.1:0"])
        let add = try a.cli(["add", a.root + "/data", "--secret"])
        let secret = String(add.stdout.split(whereSeparator: \.isWhitespace).last ?? "")
        let base = "http://" + (try XCTUnwrap(a.status().http))
        XCTAssertEqual(try get(base + "/healthz").body, "ok\n")
        // No peer yet: not ready, and says why.
        let early = try get(base + "/readyz")
        XCTAssertEqual(early.status, 503)
        XCTAssertEqual(early.body, "not ready: 1 folder has never reached a peer\n")
        XCTAssertEqual(try a.status().folders.first?.state, "idle", "no peer connected")

        let b = try DaemonHarness(name: "httpb")
        try b.startDaemon(extra: ["--join", try XCTUnwrap(a.status().listen)])
        XCTAssertEqual(try b.cli(["add", b.root + "/data", "--secret", secret]).status, 0)
        try Data("hello over http\n".utf8).write(to: URL(fileURLWithPath: b.root + "/data/hello.txt"))
        try waitInSync(a)

        XCTAssertTrue(try poll(10) { try get(base + "/readyz").status == 200 }, "ready once a peer was reached")
        XCTAssertEqual(try get(base + "/readyz").body, "ready\n")

        // /api/status is the CLI's report.
        let api = try get(base + "/api/status")
        XCTAssertEqual(api.status, 200)
        XCTAssertEqual(api.headers["content-type"], "application/json")
        let report = try JSONSerialization.jsonObject(with: Data(api.body.utf8)) as? [String: Any]
        let cli = try JSONSerialization.jsonObject(with: Data(a.cli(["status", "--json"]).stdout.utf8)) as? [String: Any]
        XCTAssertEqual(report?["device"] as? String, cli?["device"] as? String)
        let folder = try XCTUnwrap((report?["folders"] as? [[String: Any]])?.first)
        XCTAssertEqual(folder["path"] as? String, a.root + "/data")
        XCTAssertEqual(folder["localFiles"] as? Int, 1)
        XCTAssertEqual(folder["state"] as? String, "in sync")
        let applies = folder["applies"] as? Int ?? 0
        XCTAssertGreaterThanOrEqual(applies, 1, "hello.txt was applied here")
        XCTAssertEqual(Set((folder["peers"] as? [[String: Any]])?.compactMap { $0["device"] as? String } ?? []), [try b.status().device])
        XCTAssertEqual(Set(((cli?["folders"] as? [[String: Any]])?.first ?? [:]).keys), Set(folder.keys), "the same fields as the CLI's")

        // /metrics: Prometheus text, per folder and per peer.
        let metrics = try get(base + "/metrics")
        XCTAssertEqual(metrics.status, 200)
        XCTAssertTrue(metrics.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true, "\(metrics.headers)")
        let dataPath = a.root + "/data", device = try b.status().device
        for line in ["syncd_folder_local_files{folder=\"\(dataPath)\"} 1.0",
                     "syncd_folder_local_bytes{folder=\"\(dataPath)\"} 16.0",
                     "syncd_folder_need_files{folder=\"\(dataPath)\"} 0.0",
                     "syncd_folder_applies_total{folder=\"\(dataPath)\"} \(applies)",
                     "syncd_folder_in_sync{folder=\"\(dataPath)\"} 1.0",
                     "syncd_folder_apply_duration_seconds_count{folder=\"\(dataPath)\"} \(applies)",
                     "syncd_peer_connected{folder=\"\(dataPath)\",device=\"\(device)\"} 1.0",
                     "syncd_peer_lag_sequences{folder=\"\(dataPath)\",device=\"\(device)\",direction=\"receive\"} 0.0",
                     "syncd_gossip_members{state=\"alive\"} 2.0"] {
            XCTAssertTrue(metrics.body.contains(line), "\(line) in:\n\(metrics.body)")
        }
        for name in ["syncd_folder_received_bytes_total", "syncd_folder_sent_bytes_total", "syncd_folder_conflicts_total",
                     "syncd_folder_errors_total", "syncd_folder_global_files", "syncd_folder_global_bytes", "syncd_folder_need_bytes",
                     "syncd_folder_scan_duration_seconds_bucket", "syncd_peer_rtt_seconds", "syncd_peer_lag_seconds"] {
            XCTAssertTrue(metrics.body.contains(name + "{"), "\(name) in:\n\(metrics.body)")
        }

        // The status page: plain HTML naming the folder, its state, the peer and the change.
        let page = try get(base + "/")
        XCTAssertEqual(page.headers["content-type"], "text/html; charset=utf-8")
        XCTAssertTrue(page.body.contains("<tr data-folder=\"\(dataPath)\" data-state=\"in sync\">"), page.body)
        XCTAssertTrue(page.body.contains("<tr data-device=\"\(device)\""), page.body)
        XCTAssertTrue(page.body.contains("<code>hello.txt</code>"), page.body)
        XCTAssertFalse(page.body.contains("<script"), "no JavaScript")
        b.stopDaemon()
        a.stopDaemon()
    }

    /// A stream read as it arrives: `curl -N` on `/api/events`.
    final class EventStream {
        let process = Process()
        private let pipe = Pipe()
        private(set) var text = ""

        init(_ url: String, headers: [String] = []) throws {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            process.arguments = ["-s", "-N"] + headers.flatMap { ["-H", $0] } + [url]
            process.standardOutput = pipe
            try process.run()
        }

        /// Reads until `text` satisfies `condition` or `timeout` passes.
        func read(until condition: (String) -> Bool, timeout: TimeInterval) -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            let fd = pipe.fileHandleForReading.fileDescriptor
            var buffer = [UInt8](repeating: 0, count: 65536)
            while !condition(text) && Date() < deadline {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard Glibc.poll(&p, 1, 100) > 0 else { continue }
                let n = Glibc.read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                text += String(decoding: buffer[0..<n], as: UTF8.self)
            }
            return condition(text)
        }

        deinit { if process.isRunning { process.terminate(); process.waitUntilExit() } }
    }

    func test_events_streamLocalChangesAppliedBatchesAndPeers_asServerSentEvents() throws {
        let (a, b, http) = try pair("sse")
        let base = try XCTUnwrap(http)
        try waitInSync(a)
        let stream = try EventStream(base + "/api/events")
        XCTAssertTrue(stream.read(until: { $0.contains(": syncd events\n") }, timeout: 10), "the stream opened: \(stream.text)")
        try Data("from b\n".utf8).write(to: URL(fileURLWithPath: b.root + "/data/from-b.txt"))
        try Data("from a\n".utf8).write(to: URL(fileURLWithPath: a.root + "/data/from-a.txt"))
        XCTAssertTrue(stream.read(until: { $0.contains("event: batch-applied\n") && $0.contains("event: local-change-indexed\n") }, timeout: 20),
                      stream.text)
        let events = stream.text.components(separatedBy: "\n\n").compactMap { block -> [String: Any]? in
            guard let data = block.split(separator: "\n").first(where: { $0.hasPrefix("data: ") })?.dropFirst(6) else { return nil }
            return try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any]
        }
        let applied = try XCTUnwrap(events.first { $0["kind"] as? String == "batch-applied" })
        XCTAssertEqual(applied["paths"] as? [String], ["from-b.txt"])
        XCTAssertEqual(applied["folder"] as? String, a.root + "/data")
        XCTAssertEqual(applied["device"] as? String, try b.status().device)
        let local = try XCTUnwrap(events.first { $0["kind"] as? String == "local-change-indexed" })
        XCTAssertEqual(local["paths"] as? [String], ["from-a.txt"])
        // The peer going away is told too.
        let bDevice = try b.status().device
        b.stopDaemon()
        XCTAssertTrue(stream.read(until: { $0.contains("event: peer-down\n") }, timeout: 20), stream.text)
        let down = stream.text.components(separatedBy: "event: peer-down\ndata: ").dropFirst().first ?? ""
        XCTAssertTrue(down.hasPrefix("{\"device\":\"\(bDevice)\""), down)
        XCTAssertFalse(stream.text.contains("event: scanned"), "scan timings feed the metrics only")
        // Shutting down ends the stream (the server does not wait for it forever).
        let stopped = Date()
        a.stopDaemon()
        XCTAssertLessThan(Date().timeIntervalSince(stopped), 10, "shutdown with an open event stream")
        stream.process.waitUntilExit()
    }

    func test_token_isRequiredForAllButHealthAndReadiness_asBearerOrBasicPassword() throws {
        let scratch = NSTemporaryDirectory() + "syncd-token-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let token = "s3cret-token-0123456789"
        try Data((token + "\n").utf8).write(to: URL(fileURLWithPath: scratch + "/token"))
        chmod(scratch + "/token", 0o644)
        let h = try DaemonHarness(name: "token")
        try h.startDaemon(extra: ["--http", "127.0.0.1:0", "--http-token-file", scratch + "/token"])
        let base = "http://" + (try XCTUnwrap(h.status().http))
        for path in ["/", "/api/status", "/metrics", "/api/events"] {
            let refused = try get(base + path)
            XCTAssertEqual(refused.status, 401, path)
            XCTAssertEqual(refused.headers["www-authenticate"], "Basic realm=\"syncd\", charset=\"UTF-8\"", path)
            XCTAssertEqual(try get(base + path, headers: ["Authorization": "Bearer wrong-token-0123456789"]).status, 401, path)
            XCTAssertEqual(try get(base + path, headers: ["Authorization": "Bearer " + token + "x"]).status, 401, path)
        }
        XCTAssertEqual(try get(base + "/api/status", headers: ["Authorization": "Bearer " + token]).status, 200)
        let basic = "Basic " + Data("anyone:\(token)".utf8).base64EncodedString()
        let page = try get(base + "/", headers: ["Authorization": basic])
        XCTAssertEqual(page.status, 200)
        XCTAssertTrue(page.body.contains(try h.status().device))
        XCTAssertEqual(try get(base + "/healthz").status, 200)
        XCTAssertEqual(try get(base + "/readyz").status, 200, "no folder: nothing to wait for")
        XCTAssertFalse(h.daemonLog.contains(token), "the token is never logged")
        XCTAssertTrue(h.daemonLog.contains("token required"))
        h.stopDaemon()
    }

    /// A folder in error: `/readyz` says 503, `status` exits 2 and says why, the page lists it.
    func test_folderInError_makesReadyz503_statusExit2_andThePageShowIt() throws {
        let (a, b, http) = try pair("err")
        let base = try XCTUnwrap(http)
        try waitInSync(a)
        XCTAssertEqual(try get(base + "/readyz").status, 200)
        try FileManager.default.removeItem(atPath: a.root + "/data/.syncd")
        try Data("poke\n".utf8).write(to: URL(fileURLWithPath: a.root + "/data/poke.txt"))
        XCTAssertTrue(try poll(15) { try a.status().folders.first?.state == "error" }, "the folder paused")
        let ready = try get(base + "/readyz")
        XCTAssertEqual(ready.status, 503)
        XCTAssertEqual(ready.body, "not ready: 1 folder in error\n")
        let human = try a.cli(["status"])
        XCTAssertEqual(human.status, 2, "a folder in error")
        XCTAssertTrue(human.stdout.contains("\(a.root)/data  [read-write]  error: "), human.stdout)
        XCTAssertTrue(human.stdout.contains(".syncd is missing"), human.stdout)
        XCTAssertEqual(try a.cli(["status", "--json"]).status, 2)
        let page = try get(base + "/")
        XCTAssertTrue(page.body.contains("data-state=\"error\""), page.body)
        XCTAssertTrue(page.body.contains("<li data-current=\"true\">\(a.root)/data is paused: "), page.body)
        let metrics = try get(base + "/metrics").body
        XCTAssertTrue(metrics.contains("syncd_folder_in_error{folder=\"\(a.root)/data\"} 1.0"), metrics)
        b.stopDaemon()   // the peer lived until here (its harness stops its daemon when released)
        let errors = metrics.split(separator: "\n").first { $0.hasPrefix("syncd_folder_errors_total{folder=\"\(a.root)/data\"} ") }
        XCTAssertGreaterThanOrEqual(Int(errors?.split(separator: " ").last ?? "") ?? 0, 1, metrics)
    }

    /// A peer gossip calls dead stays listed, with when it was last seen.
    func test_status_keepsADeadPeerListed_withLastSeen() throws {
        let (a, b, _) = try pair("dead", http: [])
        try waitInSync(a)
        let device = try b.status().device
        b.stopDaemon(signal: SIGKILL)
        struct Report: Decodable {
            struct Folder: Decodable { var peers: [Peer]? }
            struct Peer: Decodable { var device: String; var connected: Bool; var gossip: String?; var lastSeen: Double?; var name: String? }
            var folders: [Folder]
        }
        var peer: Report.Peer?
        XCTAssertTrue(try poll(40) {
            let r = try JSONDecoder().decode(Report.self, from: Data(a.cli(["status", "--json"]).stdout.utf8))
            peer = r.folders.first?.peers?.first { $0.device == device }
            return peer?.gossip == "dead"
        }, "gossip declares the killed peer dead: \(String(describing: peer))")
        XCTAssertEqual(peer?.connected, false)
        let seen = try XCTUnwrap(peer?.lastSeen)
        XCTAssertLessThan(abs(Date().timeIntervalSince1970 - seen), 60)
        let human = try a.cli(["status"]).stdout
        XCTAssertTrue(human.contains("peer \(device.prefix(7))  dead (gossip), last seen "), human)
        XCTAssertEqual(peer?.name, String(device.prefix(7)))
        // Logs name the device as the CLI does.
        XCTAssertTrue(a.daemonLog.contains("device=\(device.prefix(7)) "), "the log names \(device.prefix(7)): \(a.daemonLog.suffix(3000))")
    }
}
