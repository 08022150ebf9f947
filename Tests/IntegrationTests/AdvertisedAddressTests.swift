@testable import SyncDaemon
import XCTest

/// `--listen 0.0.0.0` without `--advertise`: which address the daemon announces, and why.
final class AdvertisedAddressTests: XCTestCase {
    private let interfaces = [(name: "lo", ip: "127.0.0.1"), (name: "docker0", ip: "172.17.0.1"),
                              (name: "eth0", ip: "10.0.1.4")]

    func test_theDefaultRoutesSourceAddress_isPreferredOverTheFirstInterface() {
        let (host, why) = Daemon.chooseAdvertisedHost(routeSource: "10.0.1.4", interfaces: interfaces)
        XCTAssertEqual(host, "10.0.1.4", "not docker0's, which only this host can reach")
        XCTAssertTrue(why.contains("interface eth0") && why.contains("default route"), why)
    }

    func test_withoutADefaultRoute_theFirstRoutableInterfaceAddress() {
        let (host, why) = Daemon.chooseAdvertisedHost(routeSource: nil, interfaces: [(name: "lo", ip: "127.0.0.1"),
                                                                                     (name: "eth1", ip: "169.254.3.3"),
                                                                                     (name: "eth0", ip: "192.168.5.2")])
        XCTAssertEqual(host, "192.168.5.2", "not loopback, not link-local")
        XCTAssertTrue(why.contains("no default route") && why.contains("eth0"), why)
    }

    func test_withNothingButLoopback_loopback_saidPlainly() {
        let (host, why) = Daemon.chooseAdvertisedHost(routeSource: nil, interfaces: [(name: "lo", ip: "127.0.0.1")])
        XCTAssertEqual(host, "127.0.0.1")
        XCTAssertTrue(why.contains("only members on this host can reach it"), why)
    }

    /// On this machine: whatever it has, the answer is one of its addresses (or loopback).
    func test_thisHost() {
        let (host, _) = Daemon.chooseAdvertisedHost(routeSource: Daemon.defaultRouteSource(), interfaces: Daemon.interfaceIPv4s())
        XCTAssertTrue(host == "127.0.0.1" || Daemon.interfaceIPv4s().contains { $0.ip == host }, host)
    }
}
