package netplugin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// neighbour is one entry of the host's neighbour (ARP/NDP) table.
type neighbour struct {
	family  uint8
	ifindex int32
	ip      net.IP
	mac     net.HardwareAddr
}

// ndmsg is struct ndmsg of linux/neighbour.h: family, two pad fields,
// ifindex, state, flags, type.
const sizeofNdmsg = 12

// neighbours dumps the host's neighbour table.
func neighbours() ([]neighbour, error) {
	rib, err := syscall.NetlinkRIB(unix.RTM_GETNEIGH, unix.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("dump neighbour table: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(rib)
	if err != nil {
		return nil, fmt.Errorf("parse neighbour table: %w", err)
	}
	var out []neighbour
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWNEIGH || len(m.Data) < sizeofNdmsg {
			continue
		}
		n := neighbour{family: m.Data[0], ifindex: int32(binary.NativeEndian.Uint32(m.Data[4:8]))}
		for b := m.Data[sizeofNdmsg:]; len(b) >= unix.SizeofRtAttr; {
			l := int(binary.NativeEndian.Uint16(b[0:2]))
			if l < unix.SizeofRtAttr || l > len(b) {
				break
			}
			switch v := b[unix.SizeofRtAttr:l]; binary.NativeEndian.Uint16(b[2:4]) {
			case unix.NDA_DST:
				n.ip = net.IP(append([]byte(nil), v...))
			case unix.NDA_LLADDR:
				n.mac = net.HardwareAddr(append([]byte(nil), v...))
			}
			b = b[min(len(b), (l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1)):]
		}
		if n.ip != nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// forgetNeighbours deletes the host's neighbour entries for ips, on any
// device. A pod gets an address an earlier pod released (host-local hands
// them out again once it wraps around its range), and the host may still
// hold that pod's MAC for it: on a table smaller than gc_thresh1 a stale
// entry is never collected. The new pod's gratuitous ARP (the bridge
// plugin's arp_notify) goes out as its veth comes up, before the bridge
// port forwards, and is lost; the host's first packets to the new pod then
// go to the old MAC until the entry is re-validated, about 5 s, and a
// kubelet probe with a 1 s timeout fails on them (upstream's "should *not*
// be restarted with a tcp:8080 liveness probe" did, on berth and on
// containerd alike). Without an entry the host resolves the address afresh.
func forgetNeighbours(ips []net.IP) error {
	all, err := neighbours()
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range all {
		for _, ip := range ips {
			if n.ip.Equal(ip) {
				errs = append(errs, delNeighbour(n))
			}
		}
	}
	return errors.Join(errs...)
}

// delNeighbour sends RTM_DELNEIGH for n and reads the kernel's answer; an
// entry already gone is not an error.
func delNeighbour(n neighbour) error {
	ip := n.ip
	if n.family == unix.AF_INET {
		ip = ip.To4()
	}
	attrLen := unix.SizeofRtAttr + len(ip)
	msgLen := unix.SizeofNlMsghdr + sizeofNdmsg + (attrLen+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1)
	b := make([]byte, msgLen)
	binary.NativeEndian.PutUint32(b[0:4], uint32(msgLen))
	binary.NativeEndian.PutUint16(b[4:6], unix.RTM_DELNEIGH)
	binary.NativeEndian.PutUint16(b[6:8], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(b[8:12], 1)
	nd := b[unix.SizeofNlMsghdr:]
	nd[0] = n.family
	binary.NativeEndian.PutUint32(nd[4:8], uint32(n.ifindex))
	attr := nd[sizeofNdmsg:]
	binary.NativeEndian.PutUint16(attr[0:2], uint16(attrLen))
	binary.NativeEndian.PutUint16(attr[2:4], unix.NDA_DST)
	copy(attr[unix.SizeofRtAttr:], ip)

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("delete neighbour %s: %w", n.ip, err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("delete neighbour %s: %w", n.ip, err)
	}
	buf := make([]byte, 4096)
	nr, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("delete neighbour %s: %w", n.ip, err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:nr])
	if err != nil {
		return fmt.Errorf("delete neighbour %s: %w", n.ip, err)
	}
	for _, m := range msgs {
		if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
			continue
		}
		if errno := -int32(binary.NativeEndian.Uint32(m.Data[0:4])); errno != 0 && syscall.Errno(errno) != unix.ENOENT {
			return fmt.Errorf("delete neighbour %s: %w", n.ip, syscall.Errno(errno))
		}
	}
	return nil
}
